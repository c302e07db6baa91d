"""Speed benchmarks (``make bench``): numbers to report, never timed tests."""
