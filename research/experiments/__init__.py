"""One CLI per model family, all on the shared helpers in ``common``."""
