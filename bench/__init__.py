"""Benchmarks and measurement scripts (``python -m bench.NAME``), printing JSON, and the support code they
share with the tests: gold sets, generated test material, reference implementations."""
