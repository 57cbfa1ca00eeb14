"""Distribution names and versions of dynamo-base wheels (PEP 427 / 440 / 503; file names: toolkit.dist_files)."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from toolkit.dist_files import canonical_name, wheel_name_version
from toolkit.dist_files import wheel_tags as _expanded_tags
from toolkit.errors import VpatchError

LOCAL_PREFIX = "dynamo"
# PEP 508 distribution names
NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def default_version(upstream: Version, fingerprint: str) -> Version:
    """`<upstream>+dynamo.<fingerprint>`: still satisfies `vllm==<upstream>` requirements."""
    return Version(f"{upstream}+{LOCAL_PREFIX}.{fingerprint}")


def parse_user_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise VpatchError(f"--version {text!r} is not a valid PEP 440 version") from None


def parse_dist_name(text: str) -> str:
    if not NAME_RE.match(text):
        raise VpatchError(f"--dist-name {text!r} is not a valid distribution name")
    return text


def wheel_name_part(name: str) -> str:
    """The distribution part of a wheel file name or dist-info directory (PEP 427 escaping)."""
    return canonical_name(name).replace("-", "_")


def dist_info_dir(name: str, version: Version) -> str:
    return f"{wheel_name_part(name)}-{version}.dist-info"


def wheel_filename(name: str, version: Version, stock_filename: str) -> str:
    wheel_name_version(stock_filename)  # validates
    # keep the stock file's tag triple verbatim (e.g. cp38-abi3-manylinux1_x86_64)
    tag_text = "-".join(stock_filename[:-4].split("-")[-3:])
    return f"{wheel_name_part(name)}-{version}-{tag_text}.whl"


def wheel_tags(filename: str) -> list[str]:
    """Every `Tag:` line a WHEEL file must carry for this file name."""
    return _expanded_tags(filename)
