"""C-quoted paths as git writes them in diff headers, progress lines and fast-import commands: written and read
back here, once (re-exported by `toolkit.git.formats`).

A module of its own, free of the apply and am readers' dataclasses and patterns: a series is parsed (and so its
diff headers unquoted) on every run of most commands, `vpatch build` among them.
"""

from __future__ import annotations

_ESCAPES = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 34: b'\\"', 92: b"\\\\"}
_UNESCAPES = {ord(k): v for k, v in zip('abtnvfr"\\', b'\a\b\t\n\v\f\r"\\', strict=True)}


def quote_path(path: str) -> bytes:
    """A path as git writes it in diff headers: C-quoted when it holds quotes, controls or non-ASCII."""
    raw = path.encode("utf-8", "surrogateescape")
    if not any(b < 0x20 or b >= 0x7F or b in (34, 92) for b in raw):
        return raw
    out = bytearray(b'"')
    for b in raw:
        if b in _ESCAPES:
            out += _ESCAPES[b]
        elif b < 0x20 or b >= 0x7F:
            out += b"\\%03o" % b
        else:
            out.append(b)
    return bytes(out + b'"')


def unquote_path(token: bytes) -> tuple[str, bytes]:
    """A C-quoted name at the start of `token`: (name, the rest after the closing quote).

    Raises ValueError when the closing quote is missing.
    """
    out = bytearray()
    index = 1
    while index < len(token):
        byte = token[index]
        if byte == 34:
            return out.decode("utf-8", "surrogateescape"), token[index + 1 :]
        if byte == 92 and index + 1 < len(token):
            nxt = token[index + 1]
            if 48 <= nxt <= 55 and index + 3 < len(token):
                out.append(int(token[index + 1 : index + 4], 8) & 0xFF)
                index += 4
                continue
            out.append(_UNESCAPES.get(nxt, nxt))
            index += 2
            continue
        out.append(byte)
        index += 1
    raise ValueError("unterminated quoted name")


def unquote_name(token: str) -> str:
    """A whole path token as git writes it in a diff header: C-unquoted when it is quoted, else as it is.

    Escaped bytes that are not UTF-8 decode with surrogateescape (as tree paths do here), so the name
    encodes back to git's bytes; a token whose quotes do not close is returned as it is."""
    if token.startswith('"') and token.endswith('"') and len(token) > 1:
        try:
            return unquote_path(token.encode("utf-8", "surrogateescape"))[0]
        except ValueError:
            return token
    return token


def fast_import_path(path: str) -> str:
    """A path as `git fast-import` reads it in an `M` command (C-style quoted only when it must be)."""
    if path.startswith('"') or "\n" in path or "\\" in path:
        escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return path


def printed_path(name: str) -> str:
    """A path as git prints it in a progress line (quoted when it is not plain ASCII), as the tree names it."""
    if name.startswith('"'):
        try:
            return unquote_path(name.encode("utf-8", "surrogateescape"))[0]
        except ValueError:
            return name
    return name
