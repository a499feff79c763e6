"""The benchmark harness of issue 4: in-process latency, HTTP load with wrk, peers, results and the README table."""
