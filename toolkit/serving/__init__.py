"""The serving side: code that talks to inference engines (KV-event consumer, router).

The patch-lifecycle core never imports this package; only CLI commands (and the conformance checks) do.
"""
