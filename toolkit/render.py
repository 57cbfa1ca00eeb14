"""Rendering commits as patch mails, byte-stably.

`git format-patch` with every knob that could vary pinned (`toolkit.git.FORMAT_PATCH_ARGS`: no version
signature, zero commit hash in the mbox line, full blob ids, `[PATCH]` without numbering, fixed diffstat
width, the caller's git configuration ignored); here, each mail paired with its commit and subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.git import Git
from toolkit.trailer import set_trailer


@dataclass(frozen=True)
class RenderedPatch:
    commit: str
    subject: str
    data: bytes


def render_range(repo: Git, base: str, head: str = "HEAD") -> list[RenderedPatch]:
    commits = repo.commits(f"{base}..{head}")
    if not commits:
        return []
    mails = repo.format_patch(f"{base}..{head}")
    if len(mails) != len(commits):
        raise RuntimeError(f"format-patch produced {len(mails)} mails for {len(commits)} commits")
    subjects = repo.subjects(f"{base}..{head}")
    return [RenderedPatch(c, s, m) for c, s, m in zip(commits, subjects, mails, strict=True)]


def slugify(subject: str, limit: int = 52) -> str:
    """File-name part derived from a subject, in the spirit of format-patch's own names."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", subject).strip("-.").lower()
    slug = re.sub(r"\.{2,}", ".", slug)
    if len(slug) > limit:
        cut = slug[:limit]
        # end on a whole word when one fits, rather than mid-word
        slug = cut[: cut.rfind("-")] if "-" in cut[limit // 2 :] else cut
    return slug.rstrip("-.") or "patch"


def set_patch_file_header(data: bytes, name: str) -> bytes:
    """Add `Patch-File: name` to the mail's trailer paragraph (last, where export writes it)."""
    return set_trailer(data, "Patch-File", name)
