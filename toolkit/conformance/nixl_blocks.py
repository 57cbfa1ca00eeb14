"""The shape of `remote_block_ids` in the `kv_transfer_params` a NIXL prefill engine hands out, read from the
release's own code (the engine venv's `vllm` package), so the P/D run reads the ids the way that code writes them.

- upstream's NixlConnector up to vLLM 0.16.0 (`kv_connector/v1/nixl_connector.py`): `RemoteMeta.block_ids:
  list[int]` (0.11.1: `ReqMeta.remote_block_ids: list[int]`), one flat list (the connector is not
  `SupportsHMA`, so the scheduler's `_connector_finished` hands `request_finished` the first KV-cache group's
  ids, `block_ids[0]`, and it returns them as they are);
- from its `nixl/` package on (0.32.0: `kv_connector/v1/nixl/metadata.py`): `RemoteMeta.block_ids: BlockIds`,
  with `BlockIds = tuple[list[int], ...] | list[list[int]]` in `kv_connector/utils.py`: one list per group;
- dynamo-base's NixlConnectorV1 (patches 0013, 0015: `kv_connector/v1/async_transfer.py`): `request_finished`
  returns `"remote_block_ids": list(save.block_ids)` with `KVSaveSpec.block_ids: list[int]`: flat.

A shape is `FLAT` or `PER_GROUP`, with the file and line it was read from; an annotation of another form is an
error naming them (never a guess).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.envs import layers_under
from toolkit.errors import VpatchError

FLAT, PER_GROUP = "flat", "per-group"
KVC = "vllm/distributed/kv_transfer/kv_connector"
UPSTREAM_FILES = (f"{KVC}/v1/nixl_connector.py", f"{KVC}/v1/nixl/metadata.py")
UTILS = f"{KVC}/utils.py"
SERIES_FILE = f"{KVC}/v1/async_transfer.py"
# The dataclass field a decode's connector keeps the parameters' `remote_block_ids` in: RemoteMeta.block_ids from
# 0.13.0 on, ReqMeta.remote_block_ids in 0.11.1.
FIELDS = (("RemoteMeta", "block_ids"), ("ReqMeta", "remote_block_ids"))
SHAPES = {"list[int]": FLAT, "list[list[int]]": PER_GROUP, "tuple[list[int], ...] | list[list[int]]": PER_GROUP}


@dataclass(frozen=True)
class BlockShape:
    shape: str  # FLAT | PER_GROUP
    source: str  # where it was read: FILE:LINE `annotation`


def site_packages(venv: Path) -> Path:
    """The site-packages the engine venv imports `vllm` from: its own (a stock venv; the dynamo-base venv's
    overlay wheel holds the whole package), else the first layer under it that has it (the stock+plugin venv
    holds the plugin alone, layered over the stock engine venv: toolkit/envs.py layer_on)."""
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise VpatchError("no lib/python3*/site-packages in the engine venv", path=venv)
    own = found[0]
    return next((site for site in (own, *layers_under(own)) if (site / "vllm").is_dir()), own)


def _parse(root: Path, member: str) -> ast.Module:
    return ast.parse((root / member).read_text(encoding="utf-8"), filename=member)


def _field(tree: ast.Module, cls: str, name: str) -> ast.AnnAssign | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id == name:
                    return item
    return None


def _alias(tree: ast.Module, name: str) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def _classify(text: str, where: str) -> BlockShape:
    shape = SHAPES.get(text)
    if shape is None:
        raise VpatchError(f"{where}: remote block ids annotated `{text}`, a shape the NIXL run does not know")
    return BlockShape(shape, f"{where} `{text}`")


def upstream_block_shape(root: Path) -> BlockShape:
    """The shape upstream's NixlConnector in `root` (a site-packages directory) hands out."""
    for member in UPSTREAM_FILES:
        if not (root / member).is_file():
            continue
        tree = _parse(root, member)
        item = next((f for c, n in FIELDS if (f := _field(tree, c, n)) is not None), None)
        if item is None:
            raise VpatchError(
                f"{member}: no RemoteMeta.block_ids or ReqMeta.remote_block_ids field", path=root / member
            )
        text = ast.unparse(item.annotation)
        where = f"{member}:{item.lineno}"
        if text in SHAPES:
            return _classify(text, where)
        value = _alias(_parse(root, UTILS), text) if (root / UTILS).is_file() else None
        if value is None:
            raise VpatchError(f"{where}: RemoteMeta.block_ids is `{text}`, not defined in {UTILS}")
        shape = _classify(ast.unparse(value), f"{UTILS}:{value.lineno}")
        return BlockShape(shape.shape, f"{where} `{text}`, {shape.source}")
    raise VpatchError(f"no upstream NIXL connector in {root} ({' or '.join(UPSTREAM_FILES)})")


def series_block_shape(root: Path) -> BlockShape:
    """The shape dynamo-base's NixlConnectorV1 hands out: `request_finished`'s `remote_block_ids` value, a
    `list(save.block_ids)` of a `KVSaveSpec`."""
    if not (root / SERIES_FILE).is_file():
        raise VpatchError(f"no {SERIES_FILE} in {root}: the series' transfer protocol is not installed")
    tree = _parse(root, SERIES_FILE)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "remote_block_ids":
                text = ast.unparse(value)
                if text != "list(save.block_ids)":
                    raise VpatchError(f"{SERIES_FILE}:{value.lineno}: remote_block_ids is `{text}`, not a KVSaveSpec's")
                item = _field(tree, "KVSaveSpec", "block_ids")
                if item is None:
                    raise VpatchError(f"{SERIES_FILE}: no KVSaveSpec.block_ids field")
                shape = _classify(ast.unparse(item.annotation), f"{SERIES_FILE}:{item.lineno}")
                return BlockShape(shape.shape, f"{SERIES_FILE}:{value.lineno} `{text}`, {shape.source}")
    raise VpatchError(f"{SERIES_FILE}: no remote_block_ids handed out")


def remote_blocks(params: dict[str, Any], shape: BlockShape) -> list[int]:
    """The prefill's block ids of the first (only) KV-cache group, checked against the shape the code declares."""
    ids = params.get("remote_block_ids")
    if shape.shape == PER_GROUP:
        ok = isinstance(ids, list) and len(ids) > 0 and all(isinstance(g, list) for g in ids)
        group = ids[0] if ok and isinstance(ids, list) else None
    else:
        group = ids
    if not isinstance(group, list) or not group or not all(isinstance(i, int) for i in group):
        raise VpatchError(f"remote_block_ids {str(ids)[:80]} is not {shape.shape} as {shape.source} says")
    return list(group)
