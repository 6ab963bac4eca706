"""The benchmark suite behind ``python -m benchmarks``: runner, drivers, probe and writers."""
