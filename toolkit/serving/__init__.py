"""The serving side: code that talks to inference engines, apart from the patch-lifecycle core.

- `kv/`: the reference consumer of KV-cache events (wire decoding, index, subscriber, router);
  imported only by CLI commands and the conformance checks, never by the lifecycle core.
- `engine/`: scripts that run inside a vLLM venv (run by path, never imported by the core).
"""
