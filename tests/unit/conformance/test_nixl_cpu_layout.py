"""nixl_cpu_layout: where upstream's NixlConnector reads a CPU cache's kernel block size, against the CPU backend's KV
layout, from sources laid out as a release's `vllm` package (the forms of vLLM 0.11.1 and 0.13.0, written here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.conformance.nixl_cpu_layout import (
    CPU_ATTN,
    NIXL,
    cpu_kv_shape,
    kernel_block_position,
    upstream_nixl_cpu_blocked,
)

# 0.11.1's form: the connector delegates to its worker (both have register_kv_caches); the NHD position for all.
NIXL_0111 = """
class NixlConnector:
    def register_kv_caches(self, kv_caches):
        self.connector_worker.register_kv_caches(kv_caches)


class NixlConnectorWorker:
    def register_kv_caches(self, kv_caches):
        for cache in kv_caches:
            kernel_block_size = cache.shape[-2] if self.use_mla else cache.shape[-3]

    def _validate_remote_agent_handshake(self, meta):
        assert (
            meta.block_len == self.block_len
        ), "Remote P worker KV layer cache must be of shape [2, N, heads, block_size, head_dim]."

    def blocksize_post_process(self, ids):
        def _process_local_gt_remote(blocks, ratio):
            return blocks.reshape(-1, ratio).permute(0, 1)
"""
# 0.13.0's form: the position chosen per device.
NIXL_0130 = """
class NixlConnectorWorker:
    def register_kv_caches(self, kv_caches):
        if self.device_type == "cpu":
            block_size_position = -2
        else:
            block_size_position = -2 if self.use_mla else -3
        for cache in kv_caches:
            kernel_block_size = cache.shape[block_size_position]
"""
CPU_HND = """
class CPUAttentionBackend:
    @staticmethod
    def get_kv_cache_shape(num_blocks, block_size, num_kv_heads, head_size, cache_dtype_str="auto"):
        return 2, num_blocks, num_kv_heads, block_size, head_size
"""
CPU_NHD = CPU_HND.replace("num_kv_heads, block_size, head_size\n", "block_size, num_kv_heads, head_size\n")


def _release(root: Path, nixl: str | None, cpu: str | None) -> Path:
    for member, text in ((NIXL, nixl), (CPU_ATTN, cpu)):
        if text is not None:
            (root / member).parent.mkdir(parents=True, exist_ok=True)
            (root / member).write_text(text, encoding="utf-8")
    return root


def test_the_worker_s_reading_is_found_past_the_connector_s_method_of_the_same_name() -> None:
    assert kernel_block_position(NIXL_0111) == (-3, 10)
    assert kernel_block_position(NIXL_0130) is None  # a position of its own per device: the run judges it
    assert cpu_kv_shape(CPU_HND) == (["2", "num_blocks", "num_kv_heads", "block_size", "head_size"], 5)


def test_0_11_1_s_reading_of_the_cpu_layout_names_every_line(tmp_path: Path) -> None:
    why = upstream_nixl_cpu_blocked(_release(tmp_path, NIXL_0111, CPU_HND))
    assert why is not None
    assert f"cache.shape[-3] ({NIXL}:10)" in why
    assert f"(2, num_blocks, num_kv_heads, block_size, head_size) ({CPU_ATTN}:5) is num_kv_heads" in why
    assert f"({NIXL}:13 `Remote P worker KV layer cache must be of shape ...`)" in why  # the assert statement's line
    assert f"({NIXL}:19, blocksize_post_process)" in why  # the reshape that raises out of generate


@pytest.mark.parametrize(
    ("nixl", "cpu"),
    [
        (NIXL_0130, CPU_HND),  # 0.13.0 on: reads -2 on CPU
        (NIXL_0111, CPU_NHD),  # a CPU layout whose -3 is block_size: the reading would be right
        (None, CPU_HND),  # no such connector (0.32.0: the nixl/ package)
        (NIXL_0111, None),  # no CPU backend
    ],
)
def test_nothing_blocks_where_the_reading_fits_or_a_file_is_missing(
    tmp_path: Path, nixl: str | None, cpu: str | None
) -> None:
    assert upstream_nixl_cpu_blocked(_release(tmp_path, nixl, cpu)) is None
