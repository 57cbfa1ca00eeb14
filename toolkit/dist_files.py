"""Wheel and sdist file names (PEP 427 / 491, PEP 625) and PEP 503 names, read without `packaging.utils`.

`packaging.utils` imports `packaging.tags`, which imports logging, platform, subprocess and sysconfig (~13-20 ms
per run) to find the running interpreter's tags; pins.toml's file names only need splitting. A name of the plain
form is read here: an ASCII name of letters and digits joined by single `.` or `_`, no build tag, tags of ASCII
letters, digits and `_` (interpreters not starting with a digit), a PEP 440 version. Every other name goes to
`packaging.utils` itself, so which names are accepted, what they give and the message for a bad one are
packaging's (`FileNameError` carries that message).
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

_NAME = r"[A-Za-z0-9]+(?:[._][A-Za-z0-9]+)*"
_TAG = r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*"
_INTERPRETER = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_PLAIN_WHEEL = re.compile(rf"({_NAME})-([^-]+)-({_INTERPRETER})-({_TAG})-({_TAG})\.whl")
_PLAIN_NAME = re.compile(_NAME)
_SEPARATORS = re.compile(r"[-_.]+")


class FileNameError(ValueError):
    """A wheel or sdist file name that is not one (packaging's InvalidWheelFilename / InvalidSdistFilename)."""


def canonical_name(name: str) -> str:
    """PEP 503's normalized form: runs of `-`, `_`, `.` become one `-`, lowercased (packaging's canonicalize_name)."""
    return _SEPARATORS.sub("-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, Version]:
    """The normalized distribution name and the version of a wheel's file name."""
    plain = _plain_wheel(filename)
    if plain is not None:
        return canonical_name(plain[0]), plain[1]
    name, version, _, _ = _packaging_wheel(filename)
    return name, version


def wheel_tags(filename: str) -> list[str]:
    """Every tag (`interpreter-abi-platform`, lowercased) a wheel's file name stands for, its compressed tag sets
    expanded, sorted: the `Tag:` lines its WHEEL file must carry."""
    plain = _plain_wheel(filename)
    if plain is None:
        return sorted(str(tag) for tag in _packaging_wheel(filename)[3])
    interpreters, abis, platforms = (part.lower().split(".") for part in plain[2:])
    return sorted({f"{i}-{a}-{p}" for i in interpreters for a in abis for p in platforms})


def sdist_name_version(filename: str) -> tuple[str, Version]:
    """The normalized distribution name and the version of an sdist's file name (`.tar.gz` or `.zip`)."""
    stem = filename.removesuffix(".tar.gz") if filename.endswith(".tar.gz") else filename.removesuffix(".zip")
    name, dash, version_text = stem.rpartition("-")
    if stem != filename and dash and _PLAIN_NAME.fullmatch(name):
        try:
            return canonical_name(name), Version(version_text)
        except InvalidVersion:
            pass
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    try:
        return parse_sdist_filename(filename)
    except InvalidSdistFilename as exc:
        raise FileNameError(str(exc)) from None


def _plain_wheel(filename: str) -> tuple[str, Version, str, str, str] | None:
    """(name as written, version, interpreters, abis, platforms) of a plain wheel file name, else None."""
    match = _PLAIN_WHEEL.fullmatch(filename)
    if match is None:
        return None
    try:
        version = Version(match[2])
    except InvalidVersion:
        return None
    return match[1], version, match[3], match[4], match[5]


def _packaging_wheel(filename: str) -> tuple:
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        return parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise FileNameError(str(exc)) from None
