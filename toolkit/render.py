"""Rendering commits as patch mails, byte-stably.

`git format-patch` with every knob that could vary pinned (`toolkit.git.FORMAT_PATCH_ARGS`: no version
signature, zero commit hash in the mbox line, full blob ids, `[PATCH]` without numbering, fixed diffstat
width, the caller's git configuration ignored); here, each mail paired with its commit and subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.git import Git


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


def add_mail_headers(data: bytes, headers: list[tuple[str, str]]) -> bytes:
    """Append `Key: value` lines to the mail's header paragraph (the last paragraph of the message).

    A `Patch-File:` line stays last, where export writes it.
    """
    mail_headers, _, body = data.partition(b"\n\n")
    separator = re.search(rb"^(---\n|diff --git )", body, re.M)
    cut = separator.start() if separator else len(body)
    message, rest = body[:cut].rstrip(b"\n"), body[cut:]
    new = [f"{key}: {value}".encode() for key, value in headers]
    paragraphs = message.split(b"\n\n") if message else []
    if paragraphs and all(re.match(rb"^[A-Za-z][A-Za-z0-9-]*: ", ln) for ln in paragraphs[-1].split(b"\n")):
        last = paragraphs[-1].split(b"\n")
        tail = [ln for ln in last if ln.startswith(b"Patch-File: ")]
        paragraphs[-1] = b"\n".join([ln for ln in last if not ln.startswith(b"Patch-File: ")] + new + tail)
    else:
        paragraphs.append(b"\n".join(new))
    return mail_headers + b"\n\n" + b"\n\n".join(paragraphs) + b"\n" + rest


def set_patch_file_header(data: bytes, name: str) -> bytes:
    """Add `Patch-File: name` to the mail's header paragraph."""
    return add_mail_headers(data, [("Patch-File", name)])
