"""The cache's verified-file stamps, its flock(2) locks between processes, and the atomic file swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import toolkit.index
from tests.harness import commit_in, sha256
from toolkit.cache import locked, replace_file, still_verified
from toolkit.errors import VpatchError
from toolkit.index import cached_path, fetch_artifact
from toolkit.pins import load_pins
from toolkit.sources import STAMP, _object_stats, materialize, read_stamp

V = "1.0"


def counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every full hash `fetch_artifact` takes (the real hash still runs)."""
    hashed: list[Path] = []
    real = toolkit.index.sha256_file

    def spy(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(toolkit.index, "sha256_file", spy)
    return hashed


def test_a_verified_download_is_not_hashed_again_until_it_is_written(pinned, monkeypatch: pytest.MonkeyPatch):
    pin = load_pins(pinned.patches / "pins.toml").get(V)
    assert pin.sdist is not None
    cached = cached_path(pinned.cache, pin.sdist)
    good = cached.read_bytes()
    hashed = counting_hashes(monkeypatch)

    assert fetch_artifact(pinned.cache, pin.sdist) == cached
    assert fetch_artifact(pinned.cache, pin.sdist) == cached
    assert hashed == []  # the stamp written when it was downloaded still matches
    assert fetch_artifact(pinned.cache, pin.sdist, rehash=True) == cached
    assert hashed == [cached]

    # Flip one byte but keep the size and the mtime (os.utime can set that back; the ctime it cannot).
    before = cached.stat()
    with cached.open("r+b") as handle:
        handle.seek(len(good) // 2)
        handle.write(bytes([good[len(good) // 2] ^ 0xFF]))
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = cached.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert not still_verified(cached, pin.sdist.sha256)

    hashed.clear()
    assert fetch_artifact(pinned.cache, pin.sdist) == cached
    assert hashed == [cached]  # noticed, hashed, found wrong, downloaded again
    assert cached.read_bytes() == good and sha256(cached) == pin.sdist.sha256
    assert still_verified(cached, pin.sdist.sha256)


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from toolkit.cache import locked

    with locked(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    """
)


def test_a_lock_held_by_another_process_excludes_this_one(tmp_path: Path):
    entry = tmp_path / "entry"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(entry)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(VpatchError, match="waiting for another vpatch process"), locked(entry, timeout=0.3):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    with locked(entry, timeout=5):  # released when the holder exited
        pass


def test_a_lock_re_enters_in_one_thread_and_is_released_at_the_outermost_exit(tmp_path: Path):
    entry = tmp_path / "entry"
    probe = [sys.executable, "-c", HOLDER, str(entry)]
    with locked(entry), locked(entry):  # nested: no deadlock
        pass
    with locked(entry):
        with locked(entry):
            pass
        # Still held after the inner exit: another process cannot take it.
        other = subprocess.Popen(probe, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                other.communicate(timeout=0.5)
        finally:
            other.kill()
            other.wait()
    other = subprocess.run(probe, input="", capture_output=True, text=True, timeout=60)
    assert other.stdout == "held\n"


def test_replace_file_swaps_in_the_new_file_and_drops_the_old(tmp_path: Path):
    target, new = tmp_path / "wheel.whl", tmp_path / ".wheel.whl.tmp"
    replace_file_case = [(None, b"first"), (b"old contents", b"new contents")]
    for old, content in replace_file_case:
        target.unlink(missing_ok=True)
        if old is not None:
            target.write_bytes(old)
        new.write_bytes(content)
        inode = new.stat().st_ino
        replace_file(new, target)
        assert target.read_bytes() == content and target.stat().st_ino == inode
        assert sorted(p.name for p in tmp_path.iterdir()) == ["wheel.whl"]


def test_build_without_json_loads_neither_rich_nor_the_download_stack(pinned, tmp_path: Path):
    """Start-up imports only what the command needs: a plain `build --no-verify` in a process of its own."""
    pinned.write_series(V, {})
    assert pinned.run("apply", V) == 0
    commit_in(pinned.checkout(V), {"vllm/extra_module.py": "X = 1\n"}, subject="[Core] an extra module")
    assert pinned.run("export", V) == 0
    out = tmp_path / "dist"
    argv = ["--root", str(pinned.root), "--cache-dir", str(pinned.cache), "build", V, "-o", str(out), "--no-verify"]
    script = textwrap.dedent(
        f"""
        import json, sys
        from toolkit.cli import main
        code = main({argv!r})
        heavy = ("rich", "filelock", "tomlkit", "urllib.request", "tarfile", "toolkit.wheel.verify")
        print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    *lines, last = proc.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "loaded": []}
    [wheel] = out.glob("*.whl")
    [line] = lines
    assert line.startswith(f"{V}  {wheel}  {wheel.stat().st_size / 1e6:.1f} MB  built in ")
    assert line.endswith("verify: skipped") and "▶ overlay build of vllm 1.0" in proc.stderr


def test_a_base_whose_pack_git_freshened_is_hashed_once_then_trusted_again(pinned):
    """git bumps the mtime of a pack that already holds an object it is asked to write; the content is
    unchanged, so after one full hash the stamp takes the new stats and the next read is cheap."""
    pin = load_pins(pinned.patches / "pins.toml").get(V)
    base = materialize(pin, pinned.cache)
    stamp_file = base.repo / STAMP
    pack = max((base.repo / name for name in _object_stats(base.repo)), key=lambda path: path.stat().st_size)
    stamped = json.loads(stamp_file.read_text())["stats"]
    os.utime(pack, ns=(pack.stat().st_atime_ns, pack.stat().st_mtime_ns + 10**9))
    assert _object_stats(base.repo) != stamped

    assert read_stamp(base.repo) is not None  # hashed in full, same content: accepted
    assert json.loads(stamp_file.read_text())["stats"] == _object_stats(base.repo)
    again = materialize(pin, pinned.cache)
    assert (again.reused, again.commit) == (True, base.commit)

    with pack.open("r+b") as handle:  # a real change is still caught, whatever the stats say
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert read_stamp(base.repo) is None
