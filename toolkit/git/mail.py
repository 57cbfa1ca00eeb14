"""Verbs on patch mails: `git am` and its session, format-patch, mailinfo and mailsplit, patch-id, range-diff."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from toolkit.git.runner import Result, Runner

AM_ARGS = ("am", "--keep-cr", "--keep-non-patch", "--committer-date-is-author-date")

# `git format-patch` with every knob that could vary pinned: no version signature, zero commit hash in the
# mbox line, full blob ids, `[PATCH]` without numbering (so inserting a patch does not touch its
# neighbours), fixed diffstat width, and the caller's git configuration ignored (see the runner).
FORMAT_PATCH_ARGS = (
    "format-patch",
    "--stdout",
    "--no-signature",
    "--zero-commit",
    "--full-index",
    "--no-numbered",
    "--subject-prefix=PATCH",
    "--stat=72",
    "--encode-email-headers",
    "--no-thread",
    "--no-renames",
    "--binary",
)
MBOX_SEPARATOR = re.compile(rb"^From 0{40} Mon Sep 17 00:00:00 2001\n", re.M)


class MailVerbs(Runner):
    def am(self, patches: Sequence[Path], *, three_way: bool = False, check: bool = False) -> Result:
        """`git am` of patch mails as the series keeps them (CRs and `[...]` subjects kept, committer date
        the author's); a stop leaves the session for `am_continue`, `am_skip` or `am_abort`."""
        args = [*AM_ARGS, *(["--3way"] if three_way else []), *(str(p) for p in patches)]
        result = self.attempt(*args)
        return result.checked(*args) if check else result

    def am_continue(self) -> Result:
        return self.attempt("am", "--continue")

    def am_skip(self) -> None:
        self.run("am", "--skip")

    def am_abort(self) -> None:
        """End the session, back where it started."""
        self.run("am", "--abort")

    def am_quit(self) -> None:
        """End the session, leaving HEAD, index and work tree as they are."""
        self.run("am", "--quit")

    def format_patch(self, range_: str) -> list[bytes]:
        """The commits of `range_` as mails, each byte for byte what `git format-patch -o` writes for it
        (see FORMAT_PATCH_ARGS)."""
        raw = self.run(*FORMAT_PATCH_ARGS, range_).stdout
        starts = [m.start() for m in MBOX_SEPARATOR.finditer(raw)]
        mails = [raw[s:e] for s, e in zip(starts, [*starts[1:], len(raw)], strict=True)]
        # --stdout puts one blank line between mails; without it each mail is byte for byte what
        # `format-patch -o` writes, whatever its position in the series.
        return [m[:-1] if i < len(mails) - 1 and m.endswith(b"\n\n") else m for i, m in enumerate(mails)]

    def mailinfo(self, mail: bytes, msg: Path, patch: Path, *flags: str) -> dict[str, str]:
        """`git mailinfo`: the message body into `msg`, the diff into `patch`; returns the header fields it
        prints (Author, Email, Subject, Date), keys as git spells them."""
        info = self.run("mailinfo", *flags, str(msg), str(patch), input=mail).stdout.decode("utf-8", "replace")
        fields: dict[str, str] = {}
        for line in info.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                fields[key] = value
        return fields

    def mailsplit(self, mbox: Path, out: Path) -> None:
        """Split `mbox` into one file per mail in `out` (CRs kept)."""
        self.run("mailsplit", "-b", "--keep-cr", f"-o{out}", str(mbox))

    def patch_ids(self, stream: bytes) -> list[tuple[str, str]]:
        """`git patch-id --stable` of a stream of mails or `log -p` output: (patch id, commit id) per patch
        with a diff, in order."""
        out = self.run("patch-id", "--stable", input=stream).stdout.decode("ascii", "replace")
        return [(words[0], words[1]) for words in (line.split() for line in out.splitlines()) if len(words) == 2]

    def range_diff(self, old: str, new: str, *, creation_factor: int | None = None) -> str:
        """`git range-diff` of two ranges, uncoloured."""
        factor = [f"--creation-factor={creation_factor}"] if creation_factor is not None else []
        return self.run("range-diff", "--no-color", *factor, old, new).stdout.decode("utf-8", "replace")
