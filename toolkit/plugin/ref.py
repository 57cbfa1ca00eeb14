"""What a plugin wheel is, read back from the wheel itself: a `PluginRef` for the contract evidence.

The dynamo-base plugin's wheel carries its provenance (`<dist-info>/dynamo_base_plugin.json`, written by
toolkit/plugin/build.py); any other wheel installed beside stock vLLM is named from its METADATA. The
sha256 is the wheel file's, so the evidence says exactly which bytes were installed.
"""

from __future__ import annotations

import json
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from toolkit.cache import sha256_file
from toolkit.errors import VpatchError
from toolkit.plugin.build import PROVENANCE_FILE
from toolkit.records.contract import PluginRef


def plugin_ref(wheel: Path) -> PluginRef:
    """The wheel's name, version, sha256 and (for the dynamo-base plugin) series fingerprint and deliveries."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            metadata = next((n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            if metadata is None:
                raise VpatchError("not a wheel: it has no *.dist-info/METADATA", path=wheel)
            headers = HeaderParser().parsestr(archive.read(metadata).decode("utf-8", "replace"))
            info_name = metadata.rsplit("/", 1)[0] + "/" + PROVENANCE_FILE
            info = json.loads(archive.read(info_name)) if info_name in names else {}
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise VpatchError(f"cannot read the wheel: {exc}", path=wheel) from None
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        raise VpatchError("the wheel's METADATA has no Name or Version", path=wheel)
    series = info.get("series") if isinstance(info, dict) else None
    delivers = info.get("delivers") if isinstance(info, dict) else None
    return PluginRef(
        name=name,
        version=version,
        file=wheel.name,
        sha256=sha256_file(wheel),
        series_fingerprint=series.get("fingerprint") if isinstance(series, dict) else None,
        delivers={str(k): str(v) for k, v in delivers.items()} if isinstance(delivers, dict) else {},
    )
