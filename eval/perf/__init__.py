"""Performance benchmarks (scripts that print tables; not tests)."""
