"""Synthetic camera sites: packet builders and scenarios for demos, tests and benchmarks."""
