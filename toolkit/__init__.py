"""vpatch: keep the dynamo-base vLLM patch series alive until upstream absorbs it."""

__version__ = "0.1.0"
