"""A patch or mbox file as a source: a plain or git diff, or format-patch mails read as `git am` reads them."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from toolkit import tempnames
from toolkit.errors import VpatchError
from toolkit.git import Git, GitError
from toolkit.importer.paths import resolve_files
from toolkit.importer.units import Source, Unit, not_a_diff, note_recounts, parse_unit_diff

_MBOX_FROM_RE = re.compile(rb"^From \S+ ")
_MAIL_HEADER_RE = re.compile(rb"^(From|Subject|Date|Message-I[dD]|To|Cc|MIME-Version|Content-[A-Za-z-]+):")
_PATCH_PREFIX_RE = re.compile(r"^\s*(?:\[[^\]]*\bPATCH\b[^\]]*\]\s*)+", re.I)
_COVER_RE = re.compile(r"\bPATCH\b[^\]]*\b0+/\d+\]", re.I)


class FileSource(Source):
    """A patch or mbox file: plain diff, git diff, or format-patch mails."""

    kind = "file"

    def __init__(self, path: Path, scratch: Path) -> None:
        self.path = path
        self.scratch = scratch
        self.label = path.name

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise VpatchError("no such patch file", path=self.path) from None
        except IsADirectoryError:
            raise VpatchError("is a directory, not a patch file", path=self.path) from None
        if not data.strip():
            raise VpatchError("not a diff: the file is empty", path=self.path)
        if _looks_like_mail(data):
            return self._mail_units(data, tree, notes)
        files = parse_unit_diff(data, str(self.path), 1)
        changes = resolve_files(files, tree, str(self.path))
        if not changes:
            raise not_a_diff(self.path)
        note_recounts(changes, str(self.path), notes)
        return [Unit(self.label, str(self.path), f"import, file {self.label}", changes)]

    def _mail_units(self, data: bytes, tree: set[str], notes: list[str]) -> list[Unit]:
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix("mails"), dir=self.scratch) as tmp:
            out = Path(tmp) / "split"
            out.mkdir()
            mbox = Path(tmp) / "mbox"
            mbox.write_bytes(data if _MBOX_FROM_RE.match(data) else b"From mailsplit Mon Sep 17 00:00:00 2001\n" + data)
            git = Git(Path(tmp))
            try:
                git.mailsplit(mbox, out)
            except GitError as exc:
                raise VpatchError(f"not a readable mbox: {exc}", path=self.path) from None
            mails = sorted(out.iterdir())
            units: list[Unit] = []
            for number, mail in enumerate(mails, start=1):
                unit = self._mail_unit(git, mail, number, len(mails), data, tree, notes)
                if unit is not None:
                    units.append(unit)
        if not units:
            raise not_a_diff(self.path)
        return units

    def _mail_unit(
        self, git: Git, mail: Path, number: int, total: int, data: bytes, tree: set[str], notes: list[str]
    ) -> Unit | None:
        msg, patch = mail.with_suffix(".msg"), mail.with_suffix(".patch")
        fields = git.mailinfo(mail.read_bytes(), msg, patch, "-k", "-u", "--quoted-cr=nowarn")
        info = {key.lower(): value.strip() for key, value in fields.items()}
        raw_subject = info.get("subject", "").strip()
        subject = _PATCH_PREFIX_RE.sub("", raw_subject).strip()
        label = f"mail {number} ({subject or 'no subject'})" if total > 1 else f"{self.label} ({subject or 'mail'})"
        diff = patch.read_bytes()
        first = data.find(diff[:4096]) if diff else -1
        # Lines count in the mbox when the diff is there verbatim (not transfer-encoded); else in the mail.
        where = str(self.path) if first >= 0 else f"{self.path} (mail {number})"
        offset = data.count(b"\n", 0, first) if first >= 0 else 0
        files = parse_unit_diff(diff, where, offset + 1)
        if not files:
            if _COVER_RE.search(raw_subject):
                notes.append(f"{label}: a cover letter, skipped")
            else:
                notes.append(f"{label}: holds no diff, skipped")
            return None
        changes = resolve_files(files, tree, where)
        if not changes:
            notes.append(f"{label}: changes nothing, skipped")
            return None
        note_recounts(changes, where, notes)
        author = (info.get("author", ""), info.get("email", "")) if info.get("email") else None
        origin = f"import, file {self.label}" + (f", mail {number}" if total > 1 else "")
        return Unit(
            label,
            where,
            origin,
            changes,
            subject=subject or None,
            body=msg.read_bytes().decode("utf-8", "replace"),
            author=author,
            date=info.get("date") or None,
        )


def _looks_like_mail(data: bytes) -> bool:
    lines = data.lstrip(b"\n").split(b"\n", 12)
    if _MBOX_FROM_RE.match(lines[0]):
        return any(_MAIL_HEADER_RE.match(line) for line in lines[1:])
    return bool(_MAIL_HEADER_RE.match(lines[0])) and any(line.startswith(b"Subject:") for line in lines)
