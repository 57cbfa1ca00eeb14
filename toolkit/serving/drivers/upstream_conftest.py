"""Runs inside a vLLM venv, as the conftest.py of vLLM's tests/v1/core (copied there by path): offline shims.

toolkit/conformance/upstream_tests.py copies this file beside the test files it takes from the pinned source;
pytest, started in the venv, imports it before the tests import vLLM. It needs only vLLM and the standard library.
"""

# ruff: noqa: E402  (the environment and the shims go in place before each part of vLLM is imported)
import json
import os
import tempfile

# The model config the tests name (facebook/opt-125m), written into a local model directory.
OPT_125M_CONFIG = {
    "architectures": ["OPTForCausalLM"],
    "model_type": "opt",
    "vocab_size": 50272,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "ffn_dim": 3072,
    "max_position_embeddings": 2048,
    "torch_dtype": "float16",
    "word_embed_proj_dim": 768,
    "do_layer_norm_before": True,
    "eos_token_id": 2,
    "bos_token_id": 2,
    "pad_token_id": 1,
}

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import vllm.platforms as platforms
from vllm.platforms.cpu import CpuPlatform

platforms._current_platform = CpuPlatform()
# The CPU platform refuses block sizes other than 16 without Intel's extension, which its attention kernels
# need; these tests run no attention (the KV-connector tests use block size 4), so the check is told it is
# there. vLLM 0.11.1 only warns (block sizes not a multiple of 32) and no longer looks for the extension.
import vllm.platforms.cpu as _cpu_platform

if hasattr(_cpu_platform, "find_spec"):
    _find_spec = _cpu_platform.find_spec
    _cpu_platform.find_spec = lambda name, *args: (
        True if name == "intel_extension_for_pytorch" else _find_spec(name, *args)
    )

# vLLM 0.8.5 puts a stand-in `triton` module into sys.modules when triton is missing; the CPU runtime's torch
# then fails to import its compile stack, which vLLM reaches at import time through @torch.compile. Import
# that stack with the stand-in hidden, and register OPT from its class so vLLM inspects it in this process
# (its usual fresh interpreter would fail the same way).
import sys
import types

try:  # noqa: SIM105  (the shim's plain form, unchanged)
    import vllm.triton_utils  # noqa: F401  (installs the stand-in, in the vLLM releases that have one)
except ImportError:
    pass
_STAND_INS: dict[str, types.ModuleType] = {
    name: sys.modules[name]
    for name in ("triton", "triton.language")
    if name in sys.modules and sys.modules[name].__spec__ is None
}
if "triton" in _STAND_INS:
    for _name in _STAND_INS:
        del sys.modules[_name]
    try:
        import torch._dynamo.repro.after_dynamo
        import torch._inductor.compile_fx  # noqa: F401
    finally:
        sys.modules.update(_STAND_INS)
    from vllm import ModelRegistry
    from vllm.model_executor.models.opt import OPTForCausalLM

    ModelRegistry.register_model("OPTForCausalLM", OPTForCausalLM)

import vllm.config as config

_MODEL_DIR = tempfile.mkdtemp(prefix="vpatch-opt-")
with open(os.path.join(_MODEL_DIR, "config.json"), "w") as handle:
    json.dump(OPT_125M_CONFIG, handle)
# A tokenizer of four tokens: vLLM 0.9's StructuredOutputManager loads the model's tokenizer, even for
# tests that never tokenize.
with open(os.path.join(_MODEL_DIR, "vocab.json"), "w") as handle:
    json.dump({"<s>": 0, "<pad>": 1, "</s>": 2, "a": 3}, handle)
with open(os.path.join(_MODEL_DIR, "merges.txt"), "w") as handle:
    handle.write("#version: 0.2\n")
_HUB_NAMES = {"facebook/opt-125m"}
_original_init = config.ModelConfig.__init__


def _offline_init(self, model, *args, **kwargs):
    if model in _HUB_NAMES:
        model = _MODEL_DIR
        kwargs["tokenizer"] = _MODEL_DIR
    _original_init(self, model, *args, **kwargs)
    _install_shims()


_original_vllm_init = config.VllmConfig.__init__


def _cpu_vllm_init(self, *args, **kwargs):
    # The tests build VllmConfig without a device config; the CPU platform needs one.
    if kwargs.get("device_config") is None:
        kwargs["device_config"] = config.DeviceConfig("cpu")
    _original_vllm_init(self, *args, **kwargs)
    _install_shims()


def _install_shims() -> None:
    # From vLLM 0.9.1 the configs are pydantic dataclasses, which set __init__ again when their schema is
    # completed (on first use), so the shims go back in place after every call and before every test.
    config.ModelConfig.__init__ = _offline_init
    config.VllmConfig.__init__ = _cpu_vllm_init


_install_shims()


def pytest_runtest_setup(item: object) -> None:
    _install_shims()
