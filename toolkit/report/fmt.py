"""Number, size and duration formats shared by the HTML page and the Markdown summary."""

from __future__ import annotations

import re

_GITHUB_PULL = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+)/(?:pull|issues)/(\d+)/?$")


def seconds(value: float) -> str:
    """`0.8 s`, `41 s`, `2 min 03 s`, `1 h 02 min`."""
    if value < 10:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(value: int) -> str:
    """`512 B`, `12.3 KiB`, `280.5 MiB`, `1.20 GiB`."""
    if value < 1024:
        return f"{value} B"
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
        if value < scale * 1024 or unit == "GiB":
            amount = value / scale
            return f"{amount:.2f} {unit}" if unit == "GiB" else f"{amount:.1f} {unit}"
    raise AssertionError("unreachable")


def number(value: float) -> str:
    """Chart coordinates: at most two decimals, no trailing zeros (deterministic text)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def link_text(url: str) -> str:
    """`vllm-project/vllm#16156` for a GitHub pull request or issue, the URL otherwise."""
    match = _GITHUB_PULL.match(url)
    return f"{match[1]}/{match[2]}#{match[3]}" if match else url


def plural(count: int, word: str, suffix: str = "s") -> str:
    return f"{count} {word}{'' if count == 1 else suffix}"
