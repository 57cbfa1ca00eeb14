"""vLLM's own tests (selected files of tests/v1/core from the pinned source) against both builds.

The same test files run in the stock venv and in the dynamo-base venv; the check passes when every test
has the same outcome in both. The tests are vLLM's; the offline shims they need are ours and written
into a conftest.py beside them:

- vLLM finds no platform on a machine without a GPU: the CPU platform is selected before the tests import
  vLLM (its V1 scheduler and KV-cache manager are plain Python).
- The tests build VllmConfig without a device config, which the CPU platform needs: DeviceConfig("cpu").
- The tests name Hugging Face models ("facebook/opt-125m"); nothing can be downloaded here, so ModelConfig
  gets a local directory holding a small OPT config.json and a four-token tokenizer for those names (the
  scheduler tests never tokenize, but vLLM 0.9 loads the tokenizer), and HF_HUB_OFFLINE=1.
- The CPU platform refuses block sizes other than 16 without intel_extension_for_pytorch (its attention
  kernels need it); the tests run no attention, so the check is told the extension is there.
- vLLM 0.8.5 replaces a missing triton with a stand-in module that the CPU runtime's torch mistakes for
  triton: torch's compile stack is imported with the stand-in hidden, and OPT is registered in-process.
Tests that need more (a Qwen config from the hub, torchvision or the llava config for multimodal tests)
fail the same way in both builds.
"""

from __future__ import annotations

import subprocess
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from toolkit.conformance.checks import FAIL, PASS, CheckResult
from toolkit.envs import install, offline_env, uv_binary, venv_python
from toolkit.git import Git
from toolkit.sources import Base

TEST_FILES = (
    "tests/v1/core/test_prefix_caching.py",
    "tests/v1/core/test_specialized_manager.py",
    "tests/v1/core/test_kv_cache_utils.py",
    "tests/v1/core/test_scheduler.py",
)

CONFTEST = '''
"""Offline shims for running vLLM's tests/v1/core on a CPU-only machine (written by vpatch)."""
import json
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import vllm.platforms as platforms
from vllm.platforms.cpu import CpuPlatform

platforms._current_platform = CpuPlatform()
# The CPU platform refuses block sizes other than 16 without Intel's extension, which its attention kernels
# need; these tests run no attention (the KV-connector tests use block size 4), so the check is told it is
# there.
import vllm.platforms.cpu as _cpu_platform
_find_spec = _cpu_platform.find_spec
_cpu_platform.find_spec = lambda name, *args: (
    True if name == "intel_extension_for_pytorch" else _find_spec(name, *args)
)

# vLLM 0.8.5 puts a stand-in `triton` module into sys.modules when triton is missing; the CPU runtime's torch
# then fails to import its compile stack, which vLLM reaches at import time through @torch.compile. Import
# that stack with the stand-in hidden, and register OPT from its class so vLLM inspects it in this process
# (its usual fresh interpreter would fail the same way).
import sys

try:
    import vllm.triton_utils
except ImportError:
    pass
_STAND_INS = {
    name: sys.modules[name]
    for name in ("triton", "triton.language")
    if name in sys.modules and sys.modules[name].__spec__ is None
}
if "triton" in _STAND_INS:
    for _name in _STAND_INS:
        del sys.modules[_name]
    try:
        import torch._dynamo.repro.after_dynamo
        import torch._inductor.compile_fx
    finally:
        sys.modules.update(_STAND_INS)
    from vllm import ModelRegistry
    from vllm.model_executor.models.opt import OPTForCausalLM

    ModelRegistry.register_model("OPTForCausalLM", OPTForCausalLM)

import vllm.config as config

_MODEL_DIR = tempfile.mkdtemp(prefix="vpatch-opt-")
with open(os.path.join(_MODEL_DIR, "config.json"), "w") as handle:
    json.dump(CONFIG, handle)
# A tokenizer of four tokens: vLLM 0.9's StructuredOutputManager loads the model's tokenizer, even for
# tests that never tokenize.
with open(os.path.join(_MODEL_DIR, "vocab.json"), "w") as handle:
    json.dump({"<s>": 0, "<pad>": 1, "</s>": 2, "a": 3}, handle)
with open(os.path.join(_MODEL_DIR, "merges.txt"), "w") as handle:
    handle.write("#version: 0.2\\n")
_HUB_NAMES = {"facebook/opt-125m"}
_original_init = config.ModelConfig.__init__


def _offline_init(self, model, *args, **kwargs):
    if model in _HUB_NAMES:
        model = _MODEL_DIR
        kwargs["tokenizer"] = _MODEL_DIR
    _original_init(self, model, *args, **kwargs)


config.ModelConfig.__init__ = _offline_init

_original_vllm_init = config.VllmConfig.__init__


def _cpu_vllm_init(self, *args, **kwargs):
    # The tests build VllmConfig without a device config; the CPU platform needs one.
    if kwargs.get("device_config") is None:
        kwargs["device_config"] = config.DeviceConfig("cpu")
    _original_vllm_init(self, *args, **kwargs)


config.VllmConfig.__init__ = _cpu_vllm_init
'''

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


def ensure_pytest(venv: Path) -> None:
    if subprocess.run([str(venv_python(venv)), "-c", "import pytest"], capture_output=True).returncode != 0:
        install(venv, ["pytest"], installer="uv" if uv_binary() else "pip")


def run_upstream_tests(venv: Path, base: Base, scratch: Path) -> dict[str, str]:
    """{test id: passed | failed | error | skipped} for TEST_FILES of `base`, run in `venv`."""
    ensure_pytest(venv)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upstream-tests-", dir=scratch) as tmp:
        root = Path(tmp)
        repo = Git(base.repo)
        for path in TEST_FILES:
            target = root / Path(path).name
            target.write_bytes(repo.run("show", f"{base.commit}:{path}").stdout)
        (root / "conftest.py").write_text(CONFTEST.replace("CONFIG", repr(OPT_125M_CONFIG)))
        report = root / "junit.xml"
        env = offline_env()
        env["OMP_NUM_THREADS"] = "1"
        subprocess.run(
            [
                str(venv_python(venv)),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--junitxml",
                str(report),
                str(root),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=1800,
        )
        if not report.exists():
            raise RuntimeError("pytest wrote no report (it could not start in the venv)")
        return _outcomes(report)


def _outcomes(report: Path) -> dict[str, str]:
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[name] = (
            "failed"
            if "failure" in kinds
            else "error"
            if "error" in kinds
            else "skipped"
            if "skipped" in kinds
            else "passed"
        )
    return dict(sorted(outcomes.items()))


def compare_outcomes(stock: dict[str, str], patched: dict[str, str]) -> CheckResult:
    differing = sorted(name for name in set(stock) | set(patched) if stock.get(name) != patched.get(name))
    counts = {kind: sum(1 for v in stock.values() if v == kind) for kind in ("passed", "failed", "error", "skipped")}
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    if not stock:
        return CheckResult("upstream-tests", FAIL, "no test ran in the stock build")
    if differing:
        lines = [
            f"{name}: stock {stock.get(name, 'absent')}, dynamo-base {patched.get(name, 'absent')}"
            for name in differing
        ]
        return CheckResult(
            "upstream-tests", FAIL, f"{len(differing)} test(s) differ between the builds", "\n".join(lines)
        )
    failing = [n for n, v in stock.items() if v in ("failed", "error")]
    diff = "same outcome in both builds; failing in both:\n" + "\n".join(failing) if failing else ""
    return CheckResult(
        "upstream-tests",
        PASS,
        f"{len(stock)} tests of vLLM's tests/v1/core, same outcome in both builds ({summary})",
        diff,
    )
