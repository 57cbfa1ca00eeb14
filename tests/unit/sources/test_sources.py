"""The two source kinds (sdist and git) against real tarballs, real git repositories and the local HTTP index.

Nothing here touches the internet: sdists are built with tarfile, upstreams are git repositories in tmp
dirs, and downloads come from `helpers.LocalIndex` (or `file://` URLs when the index is not the point).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
from packaging.version import Version

from tests.harness import AUTHOR_ENV, commit_tree, default_tree, git_repo, make_sdist, sha256
from toolkit.checkout import UPSTREAM_REF
from toolkit.errors import VpatchError
from toolkit.git import Git
from toolkit.index import cached_path
from toolkit.model import Artifact, Pin
from toolkit.pins import load_pins, write_pin
from toolkit.sources import STAMP, materialize
from toolkit.sources.gitsource import mirror_path
from toolkit.sources.sdist import BASE_DATE, BASE_REF, base_repo_path

V = "1.0"
PREFIX = f"vllm-{V}"

# ---------------------------------------------------------------- helpers


def member(
    name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644, **attrs
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = 1700000000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def regular(name: str, data: bytes, *, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, mode=mode, size=len(data)), data


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.SYMTYPE, linkname=target, mode=0o777), None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.LNKTYPE, linkname=target), None


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def ls_tree(repo: Path, rev: str) -> dict[bytes, tuple[str, str]]:
    """path -> (mode, object id) of every file in `rev`'s tree."""
    raw = Git(repo).run("ls-tree", "-r", "-z", "--full-tree", rev).stdout
    result = {}
    for entry in filter(None, raw.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        mode, _kind, oid = meta.decode().split()
        result[path] = (mode, oid)
    return result


def sdist_pin(tarball: Path, version: str = V) -> Pin:
    """A pin whose sdist is downloaded from a file:// URL (urllib handles it like any other URL)."""
    artifact = Artifact(tarball.name, sha256(tarball), tarball.as_uri())
    return Pin(Version(version), "sdist", "", f"v{version}", None, artifact, (), None)


def git_pin(remote: Path, version: str, tag: str, commit: str | None) -> Pin:
    return Pin(Version(version), "git", str(remote), tag, commit, None, (), None)


def leftovers(cache: Path) -> list[str]:
    """Anything under the cache's bases/ except lock files and the per-kind directories."""
    bases = cache / "bases"
    if not bases.exists():
        return []
    return sorted(
        str(p.relative_to(bases))
        for p in bases.rglob("*")
        if not p.name.endswith(".lock") and p.relative_to(bases).parts not in (("sdist",), ("git",))
    )


def download_files(cache: Path) -> list[str]:
    downloads = cache / "downloads"
    if not downloads.exists():
        return []
    return sorted(
        str(p.relative_to(downloads))
        for p in downloads.rglob("*")
        if p.is_file() and p.suffix not in (".lock", ".verified")
    )


def the_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The single line a failed `--json` command printed on stderr."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("vpatch: error: "), lines
    return lines[0]


def fetch_json(ws, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    capsys.readouterr()
    assert ws.run("fetch", "--json", *args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def pinned_base(ws) -> str:
    pin = load_pins(ws.patches / "pins.toml").get(V)
    assert pin.base_commit is not None
    return pin.base_commit


# ---------------------------------------------------------------- sdist: a deterministic base commit

BINARY = bytes(range(256)) * 3


def rich_sdist(directory: Path) -> Path:
    """An sdist with an executable, a binary file and an in-tree symlink, besides the usual files."""
    tree = {**default_tree(V), "tools/run.sh": "#!/bin/sh\necho hi\n", "vllm/data.bin": BINARY}
    return make_sdist(directory, V, tree, extra_members=[symlink(f"{PREFIX}/vllm/link.py", "core/scheduler.py")])


def expected_tree() -> dict[bytes, tuple[str, str]]:
    files = {**default_tree(V), "tools/run.sh": "#!/bin/sh\necho hi\n", "vllm/data.bin": BINARY}
    expected = {}
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        expected[name.encode()] = ("100755" if name.endswith(".sh") else "100644", blob_id(data))
    expected[b"vllm/link.py"] = ("120000", blob_id(b"core/scheduler.py"))
    return expected


def test_sdist_base_commit_is_the_same_in_any_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    tarball = rich_sdist(tmp_path / "build")
    pin = sdist_pin(tarball)
    first = materialize(pin, tmp_path / "cache-a", quiet=True)
    # A user's git identity, dates and time zone must not leak into the commit.
    for key, value in {**AUTHOR_ENV, "GIT_COMMITTER_NAME": "Someone", "TZ": "Asia/Kolkata"}.items():
        monkeypatch.setenv(key, value)
    second = materialize(pin, tmp_path / "cache-b", quiet=True)

    assert first.repo != second.repo
    assert first.commit == second.commit
    assert not first.reused and not second.reused
    assert first.repo == base_repo_path(tmp_path / "cache-a", pin)
    assert Git(first.repo).rev_parse(BASE_REF) == first.commit

    tree = ls_tree(first.repo, first.commit)
    assert tree == expected_tree()
    assert not any(path.startswith(PREFIX.encode()) for path in tree)
    dates = Git(second.repo).out("log", "-1", "--format=%at %ct %an %cn", second.commit)
    epoch = BASE_DATE.split()[0]
    assert dates == f"{epoch} {epoch} vpatch vpatch"


def test_cli_fetch_builds_once_then_reuses(pinned, capsys: pytest.CaptureFixture[str]):
    ws = pinned
    base_commit = pinned_base(ws)
    shutil.rmtree(ws.cache / "bases")
    [first] = fetch_json(ws, capsys, V)
    [second] = fetch_json(ws, capsys, V)
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["base_commit"] == second["base_commit"] == base_commit
    assert first["repo"] == second["repo"]
    assert first["source"] == "sdist"
    tree = ls_tree(Path(first["repo"]), base_commit)
    assert tree[b"vllm/core/scheduler.py"][0] == "100644"
    assert set(tree) == {name.encode() for name in default_tree(V)}


def test_root_dot_entry_is_accepted(tmp_path: Path):
    """`tar -C build -czf x.tar.gz .` archives start with a `.` directory entry; it is the root, not a member."""
    plain = materialize(sdist_pin(rich_sdist(tmp_path / "plain")), tmp_path / "cache", quiet=True)
    tree = {**default_tree(V), "tools/run.sh": "#!/bin/sh\necho hi\n", "vllm/data.bin": BINARY}
    extra = [(member(".", tarfile.DIRTYPE, mode=0o755), None), symlink(f"{PREFIX}/vllm/link.py", "core/scheduler.py")]
    dotted = materialize(sdist_pin(make_sdist(tmp_path / "dot", V, tree, extra_members=extra)), tmp_path / "cache")
    assert ls_tree(dotted.repo, dotted.commit) == expected_tree()
    assert Git(dotted.repo).rev_parse(f"{dotted.commit}^{{tree}}") == Git(plain.repo).rev_parse(
        f"{plain.commit}^{{tree}}"
    )


def test_member_name_that_is_not_utf8_keeps_its_bytes(tmp_path: Path):
    tarball = tmp_path / f"{PREFIX}.tar.gz"
    with tarfile.open(tarball, "w:gz", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        for info, data in [regular(f"{PREFIX}/setup.py", b"setup()\n"), regular(f"{PREFIX}/caf\udce9.txt", b"x\n")]:
            tar.addfile(info, io.BytesIO(data))
    base = materialize(sdist_pin(tarball), tmp_path / "cache", quiet=True)
    assert ls_tree(base.repo, base.commit) == {
        b"setup.py": ("100644", blob_id(b"setup()\n")),
        b"caf\xe9.txt": ("100644", blob_id(b"x\n")),
    }


# ---------------------------------------------------------------- sdist: hostile tarballs

HOSTILE = {
    "dotdot": ([regular(f"{PREFIX}/../evil.py", b"x")], "leaves the tree through '..'"),
    "dotdot-nested": ([regular(f"{PREFIX}/vllm/../../../evil.py", b"x")], "leaves the tree through '..'"),
    "absolute": ([regular("/etc/evil.conf", b"x")], "absolute path '/etc/evil.conf'"),
    "symlink-absolute": ([symlink(f"{PREFIX}/vllm/passwd", "/etc/passwd")], "points outside the tree"),
    "symlink-dotdot": ([symlink(f"{PREFIX}/up", "../../x")], "points outside the tree"),
    "symlink-dotdot-nested": ([symlink(f"{PREFIX}/vllm/core/up", "../../../x")], "points outside the tree"),
    # Each link looks harmless on its own; followed, `esc` leaves the tree: `here` -> `..` is the root.
    "symlink-chain": (
        [symlink(f"{PREFIX}/vllm/here", ".."), symlink(f"{PREFIX}/vllm/esc", "here/../x")],
        "points outside the tree",
    ),
    "symlink-chain-via-root": (
        [symlink(f"{PREFIX}/vllm/esc", "../top/../etc/passwd"), symlink(f"{PREFIX}/top", ".")],
        "points outside the tree",
    ),
    "symlink-loop": ([symlink(f"{PREFIX}/vllm/a", "b/x"), symlink(f"{PREFIX}/vllm/b", "a")], "symbolic links"),
    "hardlink-absolute": ([hardlink(f"{PREFIX}/vllm/hard", "/etc/passwd")], "refusing hard link"),
    "hardlink-dotdot": ([hardlink(f"{PREFIX}/vllm/hard", f"{PREFIX}/../../etc/passwd")], "refusing hard link"),
    "hardlink-to-later-member": (
        [hardlink(f"{PREFIX}/vllm/hard", f"{PREFIX}/vllm/later.py"), regular(f"{PREFIX}/vllm/later.py", b"x")],
        "refusing hard link",
    ),
    "char-device": (
        [(member(f"{PREFIX}/dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None)],
        "refusing special file 'dev/null'",
    ),
    "block-device": (
        [(member(f"{PREFIX}/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None)],
        "refusing special file 'sda'",
    ),
    "fifo": ([(member(f"{PREFIX}/pipe", tarfile.FIFOTYPE), None)], "refusing special file 'pipe'"),
    "two-top-level-dirs": ([regular("other-1.0/setup.py", b"x")], "two top-level directories"),
    "file-at-top-level": ([regular("setup.py", b"x")], "two top-level directories"),
    "inside-dot-git": ([regular(f"{PREFIX}/.git/hooks/post-checkout", b"x", mode=0o755)], "is inside .git"),
    "file-and-dir": ([regular(f"{PREFIX}/README.md/x", b"x")], "both a file and a directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarball_is_refused_by_pin_add(workspace, capsys: pytest.CaptureFixture[str], case: str):
    members, problem = HOSTILE[case]
    workspace.publish(V, extra_members=members)
    capsys.readouterr()
    assert workspace.run("pin", "add", V, "--json") == 1
    error = the_error(capsys)
    assert problem in error
    assert f"{PREFIX}.tar.gz" in error  # names the tarball
    assert not (workspace.patches / "pins.toml").exists()
    assert leftovers(workspace.cache) == []


@pytest.mark.parametrize("case", ["dotdot", "symlink-absolute", "symlink-chain", "hardlink-dotdot", "fifo"])
def test_hostile_tarball_is_refused_by_materialize(tmp_path: Path, case: str):
    members, problem = HOSTILE[case]
    pin = sdist_pin(make_sdist(tmp_path / "build", V, extra_members=members))
    with pytest.raises(VpatchError) as caught:
        materialize(pin, tmp_path / "cache", quiet=True)
    assert problem in caught.value.message
    assert "\n" not in str(caught.value)
    assert leftovers(tmp_path / "cache") == []
    # The downloaded tarball itself is fine (its hash matched); only the base was refused.
    assert download_files(tmp_path / "cache") == [f"{pin.sdist.sha256}/{PREFIX}.tar.gz"]


def test_truncated_tarball_is_refused(workspace, capsys: pytest.CaptureFixture[str]):
    published = workspace.publish(V)
    published.write_bytes(published.read_bytes()[:-200])
    workspace.index.add(published)  # the index serves the truncated file with its true hash
    capsys.readouterr()
    assert workspace.run("pin", "add", V, "--json") == 1
    assert "tarball" in the_error(capsys)
    assert leftovers(workspace.cache) == []


# ---------------------------------------------------------------- sdist: verified downloads


def test_index_hash_mismatch_is_refused(workspace, capsys: pytest.CaptureFixture[str]):
    published = workspace.publish(V)
    claimed = "ab" * 32
    workspace.index.claim(published.name, claimed)
    capsys.readouterr()
    assert workspace.run("pin", "add", V, "--json") == 1
    error = the_error(capsys)
    assert "sha256 mismatch" in error
    assert claimed in error and sha256(published) in error
    assert not (workspace.patches / "pins.toml").exists()
    assert download_files(workspace.cache) == []
    assert leftovers(workspace.cache) == []


def test_tampered_download_is_downloaded_again(pinned, capsys: pytest.CaptureFixture[str]):
    ws = pinned
    pin = load_pins(ws.patches / "pins.toml").get(V)
    assert pin.sdist is not None
    cached = cached_path(ws.cache, pin.sdist)
    good = cached.read_bytes()
    assert sha256(cached) == pin.sdist.sha256

    cached.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    capsys.readouterr()
    assert ws.run("pin", "verify", "--json") == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and all(row["status"] == "ok" for row in report["artifacts"])
    assert cached.read_bytes() == good

    # A rebuild of the base never reads the tampered copy: it downloads again and gets the pinned commit.
    cached.write_bytes(b"not a tarball")
    shutil.rmtree(ws.cache / "bases")
    [row] = fetch_json(ws, capsys, V)
    assert (row["cached"], row["base_commit"]) == (False, pin.base_commit)
    assert cached.read_bytes() == good


def test_tampered_download_and_tampered_index_fail(pinned, capsys: pytest.CaptureFixture[str]):
    ws = pinned
    pin = load_pins(ws.patches / "pins.toml").get(V)
    assert pin.sdist is not None
    evil = make_sdist(ws.root / "evil", V, {**default_tree(V), "setup.py": "import os; os.system('x')\n"})
    (ws.index.files_dir / pin.sdist.file).write_bytes(evil.read_bytes())
    cached_path(ws.cache, pin.sdist).write_bytes(evil.read_bytes())
    shutil.rmtree(ws.cache / "bases")
    capsys.readouterr()
    assert ws.run("fetch", "--json", V) == 1
    error = the_error(capsys)
    assert "sha256 mismatch" in error and pin.sdist.sha256 in error
    # the tampered sdist is gone and nothing half-downloaded is left; the (untouched) stock wheel stays
    assert [f for f in download_files(ws.cache) if f.endswith(".tar.gz")] == []
    assert leftovers(ws.cache) == []


# ---------------------------------------------------------------- sdist: damaged cache entries


def _object_file(repo: Path) -> Path:
    """The largest object file of the repository (a loose object or a pack, however git stored them)."""
    files = [p for p in (repo / "objects").rglob("*") if p.is_file() and p.parent.name not in ("info",)]
    return max(files, key=lambda p: (p.stat().st_size, str(p)))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


SDIST_DAMAGE = {
    "truncate-object-file": lambda repo: _truncate(_object_file(repo)),
    "flip-object-byte": lambda repo: _flip_byte(_object_file(repo)),
    "delete-object-file": lambda repo: _object_file(repo).unlink(),
    "extra-loose-object": lambda repo: Git(repo).run("hash-object", "-w", "--stdin", input=b"stray\n"),
    "delete-stamp": lambda repo: (repo / STAMP).unlink(),
    "move-ref": lambda repo: (repo / "refs" / "heads" / "upstream").write_text("1" * 40 + "\n"),
    "delete-ref": lambda repo: (repo / "refs" / "heads" / "upstream").unlink(),
    "delete-head": lambda repo: (repo / "HEAD").unlink(),
}


@pytest.mark.parametrize("damage", sorted(SDIST_DAMAGE))
def test_damaged_sdist_base_is_rebuilt(pinned, capsys: pytest.CaptureFixture[str], damage: str):
    ws = pinned
    base_commit = pinned_base(ws)
    repo = base_repo_path(ws.cache, load_pins(ws.patches / "pins.toml").get(V))
    assert (repo / "refs" / "heads" / "upstream").is_file()  # fast-import writes a loose ref
    SDIST_DAMAGE[damage](repo)
    [rebuilt] = fetch_json(ws, capsys, V)
    assert (rebuilt["cached"], rebuilt["base_commit"]) == (False, base_commit)
    assert Git(repo).ok("fsck", "--no-progress", "--strict")
    [again] = fetch_json(ws, capsys, V)
    assert (again["cached"], again["base_commit"]) == (True, base_commit)
    assert [p.name for p in repo.parent.iterdir() if p.suffix != ".lock"] == [repo.name]  # no staging left


# ---------------------------------------------------------------- git source

GIT_TREE = {**default_tree(V), "tests/test_scheduler.py": "def test_nothing():\n    pass\n"}


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, str, str]:
    """An upstream repository with v1.0 and, one commit later, v1.1 (both annotated tags)."""
    path = tmp_path / "upstream"
    repo = git_repo(path, GIT_TREE, tag="v1.0")
    first = repo.out("rev-parse", "HEAD")
    second = commit_tree(repo, {"vllm/__init__.py": '__version__ = "1.1"\n'}, message="release 1.1")
    repo.run("tag", "-a", "v1.1", "-m", "v1.1", env=AUTHOR_ENV)
    return path, first, second


def pin_git(ws, remote: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    ws.publish(V)
    capsys.readouterr()
    assert ws.run("pin", "add", V, "--source", "git", "--remote", str(remote), "--tag", "v1.0", "--json") == 0, (
        capsys.readouterr().err
    )
    return json.loads(capsys.readouterr().out)


def test_git_pin_add_and_fetch(workspace, upstream, capsys: pytest.CaptureFixture[str]):
    remote, v10, _ = upstream
    added = pin_git(workspace, remote, capsys)
    assert (added["source"], added["tag"], added["commit"]) == ("git", "v1.0", v10)
    pin = load_pins(workspace.patches / "pins.toml").get(V)
    assert (pin.source, pin.commit, pin.remote) == ("git", v10, str(remote))

    [row] = fetch_json(workspace, capsys, V)
    assert (row["source"], row["base_commit"], row["cached"]) == ("git", v10, True)  # pin add fetched it
    assert Path(row["repo"]) == mirror_path(workspace.cache, str(remote))
    shutil.rmtree(workspace.cache / "bases" / "git")
    [row] = fetch_json(workspace, capsys, V)
    assert (row["base_commit"], row["cached"]) == (v10, False)
    [row] = fetch_json(workspace, capsys, V)
    assert (row["base_commit"], row["cached"]) == (v10, True)
    # The sdist source of the same pin still works side by side.
    [row] = fetch_json(workspace, capsys, V, "--source", "sdist")
    assert (row["source"], row["base_commit"]) == ("sdist", pin.base_commit)


def test_git_tag_moved_upstream_is_refused(workspace, upstream, capsys: pytest.CaptureFixture[str]):
    remote, v10, v11 = upstream
    pin_git(workspace, remote, capsys)
    Git(remote).run("tag", "-f", "-a", "v1.0", "-m", "moved", v11, env=AUTHOR_ENV)
    # The verified mirror still serves the pinned commit; a fresh fetch from upstream sees the moved tag.
    [row] = fetch_json(workspace, capsys, V)
    assert (row["base_commit"], row["cached"]) == (v10, True)
    shutil.rmtree(workspace.cache / "bases" / "git")
    capsys.readouterr()
    assert workspace.run("fetch", "--json", V) == 1
    error = the_error(capsys)
    assert "tag v1.0" in error and f"is commit {v11}" in error and f"pin records {v10}" in error


def test_git_wrong_commit_in_pin_is_refused(workspace, upstream, capsys: pytest.CaptureFixture[str]):
    remote, v10, _ = upstream
    wrong = "f" * 40
    write_pin(workspace.patches / "pins.toml", git_pin(remote, V, "v1.0", wrong))
    capsys.readouterr()
    assert workspace.run("fetch", "--json", V) == 1
    error = the_error(capsys)
    assert "tag v1.0" in error and v10 in error and wrong in error
    # A missing tag is just as clear.
    write_pin(workspace.patches / "pins.toml", git_pin(remote, V, "v9.9", None))
    assert workspace.run("fetch", "--json", V) == 1
    assert "cannot fetch tag v9.9" in the_error(capsys)


GIT_DAMAGE = {
    "delete-object-file": lambda repo, other: _object_file(repo).unlink(),
    "flip-object-byte": lambda repo, other: _flip_byte(_object_file(repo)),
    "truncate-object-file": lambda repo, other: _truncate(_object_file(repo)),
    "delete-stamp": lambda repo, other: (repo / STAMP).unlink(),
    # The tag ref now names another commit the mirror really has: a damaged cache, not a moved upstream tag.
    "move-tag-ref": lambda repo, other: Git(repo).update_ref("refs/tags/v1.0", other),
    "delete-tag-ref": lambda repo, other: (repo / "refs" / "tags" / "v1.0").unlink(),
    "delete-head": lambda repo, other: (repo / "HEAD").unlink(),
}


@pytest.mark.parametrize("damage", sorted(GIT_DAMAGE))
def test_damaged_git_mirror_is_rebuilt(workspace, upstream, capsys: pytest.CaptureFixture[str], damage: str):
    remote, v10, v11 = upstream
    pins_file = workspace.patches / "pins.toml"
    write_pin(pins_file, git_pin(remote, V, "v1.0", v10))
    write_pin(pins_file, git_pin(remote, "1.1", "v1.1", v11))
    rows = fetch_json(workspace, capsys)
    assert [(r["base_commit"], r["cached"]) for r in rows] == [(v10, False), (v11, False)]
    repo = mirror_path(workspace.cache, str(remote))
    assert (repo / "refs" / "tags" / "v1.0").is_file()
    GIT_DAMAGE[damage](repo, v11)
    [row] = fetch_json(workspace, capsys, V)
    assert (row["base_commit"], row["cached"]) == (v10, False)
    assert Git(repo).ok("fsck", "--no-progress", "--connectivity-only")
    [row] = fetch_json(workspace, capsys, V)
    assert (row["base_commit"], row["cached"]) == (v10, True)


def test_apply_from_git_source(workspace, upstream, capsys: pytest.CaptureFixture[str]):
    remote, v10, _ = upstream
    pin_git(workspace, remote, capsys)
    workspace.write_series(V, {})
    assert workspace.run("apply", V, "--source", "git", "--json") == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert (result["ok"], result["base_commit"]) == (True, v10)
    checkout = Git(workspace.checkout(V))
    assert checkout.out("rev-parse", "HEAD^{tree}") == Git(remote).out("rev-parse", "v1.0^{tree}")
    assert checkout.rev_parse(UPSTREAM_REF) == v10
    assert checkout.rev_parse("HEAD") == v10
    assert (workspace.checkout(V) / "tests" / "test_scheduler.py").is_file()  # only in git, not in the sdist
    assert checkout.is_clean()


# ---------------------------------------------------------------- the file lock


@pytest.mark.parametrize("kind", ["sdist", "git"])
def test_concurrent_materialize_builds_one_entry(tmp_path: Path, upstream, kind: str):
    remote, v10, _ = upstream
    pin = sdist_pin(rich_sdist(tmp_path / "build")) if kind == "sdist" else git_pin(remote, V, "v1.0", v10)
    cache = tmp_path / "cache"
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def work(slot: int) -> None:
        barrier.wait()
        try:
            results[slot] = materialize(pin, cache, quiet=True)
        except BaseException as exc:  # reported below, from the main thread
            results[slot] = exc

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(isinstance(r, BaseException) for r in results), results
    first, second = results
    assert first.commit == second.commit
    assert first.repo == second.repo
    assert sorted([first.reused, second.reused]) == [False, True]  # the second waited, then reused
    entries = [p.name for p in (cache / "bases" / kind).iterdir() if not p.name.endswith(".lock")]
    assert entries == [first.repo.name]
    if kind == "git":
        assert first.commit == v10
