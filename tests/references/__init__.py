"""PyTorch reference modules used by the parity tests and benchmarks."""
