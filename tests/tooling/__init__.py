"""Fault injection for tests, benchmarks and ``scripts/chaos.py``: never imported by the product."""
