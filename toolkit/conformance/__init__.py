"""Conformance: drive real vLLM (stock and patched) through named workloads and compare what happens."""
