"""The serving side: code that runs inside a vLLM venv (run by path, never imported by the core)."""
