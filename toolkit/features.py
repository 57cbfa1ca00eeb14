"""Feature names and sub-features: `Feature: pd-disagg/failed-loads` names the `failed-loads` part of `pd-disagg`.

A feature groups the patches that deliver one capability to users (kv-routing, pd-disagg). A sub-feature is a
part of it that upstream can absorb, and the series retire, on its own: its patches carry
`Feature: PARENT/SUB`, and pins.toml declares it beside the parent, as a quoted key of `[features]`:

    [features]
    pd-disagg = { description = "...", native-since = "0.9.0" }
    "pd-disagg/failed-loads" = { description = "...", native-since = "0.11.1", upstream = "vllm-project/vllm#19330" }

One level only. What judges a feature (the contracts under toolkit/contracts/, `vpatch conform --against`)
judges its sub-features through the parent: `parent_of` is the name to look contracts up by; what a
sub-feature's own patches say (retire, native-since) is read by the full name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SEP = "/"
# One lowercase slug, the same rule as for a feature; a sub-feature is PARENT/SUB.
_PART = r"[a-z0-9][a-z0-9._-]*"
NAME_RE = re.compile(rf"^{_PART}(?:{SEP}{_PART})?$")


def parent_of(name: str) -> str:
    """`pd-disagg` for `pd-disagg/failed-loads` and for `pd-disagg` itself."""
    return name.split(SEP, 1)[0]


def sub_of(name: str) -> str | None:
    """`failed-loads` for `pd-disagg/failed-loads`; None for a top-level feature."""
    return name.split(SEP, 1)[1] if SEP in name else None


def is_sub(name: str) -> bool:
    return SEP in name


def name_problem(name: str) -> str | None:
    """Why `name` is not a feature name, or None when it is one."""
    if NAME_RE.match(name):
        return None
    if name.count(SEP) > 1:
        return f"feature name {name!r}: one level of sub-feature only (PARENT/SUB, e.g. pd-disagg/failed-loads)"
    return (
        f"feature name {name!r}: use lowercase letters, digits, '.', '_' and '-', "
        "and PARENT/SUB for a sub-feature (e.g. kv-routing, pd-disagg/failed-loads)"
    )


def undeclared(name: str, declared: Iterable[str]) -> str | None:
    """Why a `Feature:` value is not declared (None when it is): names the parent's declared sub-features."""
    known = set(declared)
    if name in known:
        return None
    parent = parent_of(name)
    if is_sub(name) and parent in known:
        subs = sorted(sub_of(n) or "" for n in known if is_sub(n) and parent_of(n) == parent)
        return (
            f"unknown sub-feature {name!r} of {parent} (declared: {', '.join(subs) or 'none'}; "
            f"declare it with `vpatch feature add {name}`)"
        )
    tops = ", ".join(sorted(n for n in known if not is_sub(n))) or "none"
    return f"unknown feature {name!r} (declared in pins.toml [features]: {tops})"


def grouped(names: Iterable[str]) -> dict[str, list[str]]:
    """parent -> its sub-feature names (SUB only, sorted; empty when only the parent itself is named)."""
    groups: dict[str, set[str]] = {}
    for name in names:
        subs = groups.setdefault(parent_of(name), set())
        sub = sub_of(name)
        if sub is not None:
            subs.add(sub)
    return {parent: sorted(subs) for parent, subs in sorted(groups.items())}


def describe(names: Iterable[str]) -> list[str]:
    """`pd-disagg (block-dim, failed-loads)` per parent: the sub-features a set of patches carries, grouped."""
    return [f"{parent} ({', '.join(subs)})" if subs else parent for parent, subs in grouped(names).items()]
