# Benchmark targets (filled in by the performance issue).
