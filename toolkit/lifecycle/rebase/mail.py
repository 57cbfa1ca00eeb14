"""Editing the new series' text: the series file's comments and the `Last-Update:` date (headers: toolkit.trailer)."""

from __future__ import annotations

import datetime
import os
import re


def retarget_comments(series_text: str, old_version: str, new_version: str) -> str:
    """The old series file's comments, with "vLLM OLD" now naming NEW (patch lines untouched)."""
    # "vLLM 1.0" but not "vLLM 1.0x" or "vLLM 1.0.1".
    old_name = re.compile(rf"vLLM {re.escape(old_version)}(?!\w|\.\d)")
    lines = series_text.splitlines(keepends=True)
    return "".join(
        old_name.sub(f"vLLM {new_version}", line) if line.lstrip().startswith("#") else line for line in lines
    )


def today() -> str:
    """YYYY-MM-DD for `Last-Update:`, from SOURCE_DATE_EPOCH when set (reproducible), else now (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch.isdigit()
        else datetime.datetime.now(datetime.UTC)
    )
    return when.date().isoformat()
