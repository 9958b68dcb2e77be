"""A synthetic task for benchmarks and engine tests: no images, a known best region."""
