"""Benchmarks of the engine: figures to read and compare, never assertions (see bench.engine)."""
