"""The workload of bench/rebase_vs_git.py: the real vLLM 0.8.4 tree, a synthetic next release, the real series.

`build_fixture(work)` makes, under `work` (nothing outside it is written, except that the real cache is
asked for the 0.8.4 sdist, which `vpatch fetch` puts there anyway):

* `project/`: a vpatch project whose patches/ holds the committed `patches/vllm-0.8.4/` series (all of
  it: 9 patches, kv-routing and pd-disagg) and a pins.toml with two pins, the real 0.8.4 one and
  NEW (`0.8.4.post1`), a synthetic release;
* `cache/`: its own cache, with both sdists in downloads/ and both bases materialized (warm);
* `git/`: a plain git repository holding both base commits (`refs/bench/old-base`,
  `refs/bench/new-base`) and branch `series`, the old series applied on OLD with `git am` (checked out).

NEW's sdist is 0.8.4's own tree changed the way a release changes it, sized after the real 0.8.4 → 0.8.5
delta (697 files: 518 modified, 114 added, 11 deleted, 57 renamed; +39k/-13k lines): files the
series does not touch are modified (blocks inserted and lines changed), added, deleted and renamed;
every file the series does touch gets a block inserted well away from every hunk, so its patches
apply at an offset. Nothing overlaps a patch, so the series replays onto NEW without a conflict.
The workload is deterministic (a fixed seed; the tarballs have fixed times).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import random
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit
from packaging.version import Version

from toolkit.cache import sha256_file
from toolkit.git import AM_ARGS, Git
from toolkit.index import cached_path, fetch_artifact
from toolkit.model import Artifact, Pin
from toolkit.options import load_options
from toolkit.pins import write_pin
from toolkit.project import Project
from toolkit.sources.sdist import BASE_REF

ROOT = Path(__file__).resolve().parent.parent
OLD_VERSION = "0.8.4"
NEW_VERSION = "0.8.4.post1"
OLD_BASE_REF = "refs/bench/old-base"
NEW_BASE_REF = "refs/bench/new-base"
BRANCH = "series"
TAR_MTIME = 1745539200  # 2025-04-25, fixed: the same NEW sdist bytes on every run
AUTHOR_ENV = {"GIT_AUTHOR_NAME": "Dynamo Maintainer", "GIT_AUTHOR_EMAIL": "maintainer@dynamo.example"}
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@", re.M)


@dataclass
class Delta:
    """How NEW differs from OLD (defaults: the size of the real 0.8.4 → 0.8.5 delta)."""

    modified: int = 518
    added: int = 114
    deleted: int = 11
    renamed: int = 57
    seed: int = 20250428


@dataclass
class Fixture:
    work: Path
    root: Path
    cache: Path
    repo: Path
    old_version: str
    new_version: str
    old_base: str
    new_base: str
    old_head: str
    patches: int
    touched: list[str]
    facts: dict = field(default_factory=dict)

    def project(self) -> Project:
        return Project.load(load_options({"root": str(self.root), "cache_dir": str(self.cache), "json": True}))


# ---------------------------------------------------------------- trees as tarballs


def read_tar(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """path (without the top directory) -> (member, content) of every file and symlink."""
    members: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            if not (member.isreg() or member.issym()):
                continue
            path = member.name.split("/", 1)[1]
            handle = archive.extractfile(member) if member.isreg() else None
            members[path] = (member, handle.read() if handle else b"")
    return members


def write_sdist(path: Path, top: str, tree: dict[str, tuple[tarfile.TarInfo, bytes]]) -> None:
    """A .tar.gz of `tree` under `top/`, byte-stable (sorted, fixed times and owners)."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=TAR_MTIME, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w:", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name in sorted(tree):
            member, content = tree[name]
            info = tarfile.TarInfo(f"{top}/{name}")
            info.mtime = TAR_MTIME
            info.uname = info.gname = ""
            if member.issym():
                info.type = tarfile.SYMTYPE
                info.linkname = member.linkname
                info.mode = 0o777
                archive.addfile(info)
            else:
                info.mode = 0o755 if member.mode & 0o111 else 0o644
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))


# ---------------------------------------------------------------- NEW's changes


def _block(rng: random.Random, tag: str, indent: str, lines: int) -> list[str]:
    words = ("scheduler", "tokens", "blocks", "request", "prefill", "decode", "metrics", "config", "worker")
    body = [f"{indent}# {NEW_VERSION} ({tag}): {' '.join(rng.sample(words, 4))}"]
    body += [f"{indent}_release_{tag}_{k} = {rng.randint(0, 10**6)}  # {rng.choice(words)}" for k in range(lines - 1)]
    return body


def modify_text(text: str, rng: random.Random, tag: str) -> str:
    """Insert 1-4 blocks and change a few lines, the way a release edits a module."""
    lines = text.split("\n")
    for number in range(rng.randint(1, 4)):
        at = rng.randint(0, len(lines))
        anchor = lines[at - 1] if at else ""
        indent = anchor[: len(anchor) - len(anchor.lstrip())] if not anchor.rstrip().endswith("\\") else ""
        lines[at:at] = _block(rng, f"{tag}_{number}", indent, rng.randint(3, 30))
    plain = [i for i, line in enumerate(lines) if line.strip() and not line.rstrip().endswith(("\\", ",", "(", "["))]
    for index in rng.sample(plain, min(len(plain), rng.randint(1, 12))):
        lines[index] = lines[index].rstrip() + f"  # changed in {NEW_VERSION}"
    if len(lines) > 40 and rng.random() < 0.5:  # some code goes away
        start = rng.randrange(0, len(lines) - 20)
        del lines[start : start + rng.randint(2, 15)]
    return "\n".join(lines)


def new_module(rng: random.Random, number: int) -> str:
    lines = [f'"""A module added in {NEW_VERSION} (#{number})."""', "", "from __future__ import annotations", ""]
    for k in range(rng.randint(4, 12)):
        lines += ["", f"def helper_{number}_{k}(value: int) -> int:", f'    """Helper {k}."""']
        lines += [f"    value += {rng.randint(1, 99)}" for _ in range(rng.randint(3, 20))]
        lines += ["    return value", ""]
    return "\n".join(lines) + "\n"


def safe_insertion_line(diff: str, length: int) -> int | None:
    """A 1-based line of the old file in the middle of the widest stretch no hunk of `diff` comes near."""
    covered: list[tuple[int, int]] = []
    for match in _HUNK.finditer(diff):
        start, count = int(match.group(1)), int(match.group(2) or "1")
        covered.append((max(1, start - 6), start + max(count, 1) + 6))
    edges = [(0, 0), *sorted(covered), (length + 1, length + 1)]
    best: tuple[int, int] | None = None
    for (_, end), (start, _) in itertools.pairwise(edges):
        if start - end > 8 and (best is None or start - end > best[1] - best[0]):
            best = (end, start)
    return None if best is None else (best[0] + best[1]) // 2


def make_new_tree(
    old: dict[str, tuple[tarfile.TarInfo, bytes]],
    diffs: dict[str, str],
    delta: Delta,
) -> tuple[dict[str, tuple[tarfile.TarInfo, bytes]], dict]:
    """NEW's tree from OLD's: `diffs` (path -> the whole series' diff of that file) say what to keep clear of."""
    rng = random.Random(delta.seed)
    tree = dict(old)
    facts = {"modified": 0, "added": 0, "deleted": 0, "renamed": 0, "offset_files": 0}
    texts = []
    for path, (member, content) in sorted(old.items()):
        if path in diffs or not member.isreg() or not path.endswith((".py", ".md", ".txt", ".yaml", ".sh", ".cu")):
            continue
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if content.count(b"\n") >= 10:
            texts.append(path)
    chosen = rng.sample(texts, delta.modified + delta.deleted + delta.renamed)
    modify, delete, rename = (
        chosen[: delta.modified],
        chosen[delta.modified : delta.modified + delta.deleted],
        chosen[delta.modified + delta.deleted :],
    )
    for number, path in enumerate(modify):
        member, content = tree[path]
        tree[path] = (member, modify_text(content.decode("utf-8"), rng, f"m{number}").encode("utf-8"))
        facts["modified"] += 1
    for path in delete:
        del tree[path]
        facts["deleted"] += 1
    for number, path in enumerate(rename):
        member, content = tree.pop(path)
        stem, dot, suffix = path.rpartition(".")
        if rng.random() < 0.6:  # most renames change the file a little too
            content = modify_text(content.decode("utf-8"), rng, f"r{number}").encode("utf-8")
        tree[f"{stem}_moved.{suffix}" if dot else f"{path}_moved"] = (member, content)
        facts["renamed"] += 1
    template = next(member for member, _ in old.values() if member.isreg() and not member.mode & 0o111)
    directories = sorted({p.rsplit("/", 1)[0] for p in texts if p.startswith("vllm/") and "/" in p})
    for number in range(delta.added):
        path = f"{rng.choice(directories)}/added_in_release_{number:03d}.py"
        tree[path] = (template, new_module(rng, number).encode("utf-8"))
        facts["added"] += 1
    # Files the series touches move under it: a block inserted far from every hunk (the patches then
    # apply at an offset, as they do after any real release).
    for path, diff in sorted(diffs.items()):
        if path not in old:
            continue  # a file the series adds
        member, content = old[path]
        lines = content.decode("utf-8").split("\n")
        at = safe_insertion_line(diff, len(lines))
        if at is None:
            continue
        anchor = lines[at - 1]
        indent = anchor[: len(anchor) - len(anchor.lstrip())]
        lines[at - 1 : at - 1] = _block(rng, f"o{facts['offset_files']}", indent, rng.randint(4, 25))
        tree[path] = (member, "\n".join(lines).encode("utf-8"))
        facts["offset_files"] += 1
    return tree, facts


# ---------------------------------------------------------------- the fixture


def _pins_file(path: Path, old_pin_version: str) -> None:
    """A copy of the repository's pins.toml with only OLD's pin (NEW is added once its base is known)."""
    document = tomlkit.parse((ROOT / "patches" / "pins.toml").read_text(encoding="utf-8"))
    pins = document["pins"]
    for version in [v for v in pins if v != old_pin_version]:
        del pins[version]
    path.write_text(tomlkit.dumps(document), encoding="utf-8")


def _seed_download(cache: Path, artifact: Artifact, source: Path) -> None:
    target = cached_path(cache, artifact)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def build_fixture(work: Path, delta: Delta | None = None) -> Fixture:
    delta = delta or Delta()
    real = Project.load(load_options(cwd=ROOT))
    old_pin = real.pins.get(OLD_VERSION)
    assert old_pin.sdist is not None
    real.base(old_pin)  # downloads and materializes into the real cache if it lacks them (first run only)
    old_tarball = fetch_artifact(real.options.cache_dir, old_pin.sdist, quiet=True)

    root, cache, repo_dir = work / "project", work / "cache", work / "git"
    patches = root / "patches"
    patches.mkdir(parents=True)
    shutil.copytree(ROOT / "patches" / f"vllm-{OLD_VERSION}", patches / f"vllm-{OLD_VERSION}")
    _pins_file(patches / "pins.toml", OLD_VERSION)
    _seed_download(cache, old_pin.sdist, old_tarball)
    project = Project.load(load_options({"root": str(root), "cache_dir": str(cache), "json": True}))
    old_base = project.base(old_pin)
    series = project.series(old_pin)

    # The plain git repository: OLD's base, the series on it as commits.
    repo = Git.init(repo_dir)
    repo.run("fetch", "--quiet", "--no-tags", str(old_base.repo), f"{BASE_REF}:{OLD_BASE_REF}")
    repo.run("checkout", "--quiet", "-b", BRANCH, OLD_BASE_REF)
    repo.run(*AM_ARGS, *(str(p.path) for p in series.patches), env=AUTHOR_ENV)
    old_head = repo.rev_parse("HEAD")
    assert old_head is not None
    touched = sorted({p for patch in series.patches for p in patch.touched_paths})
    diffs = {path: repo.out("diff", "-U0", OLD_BASE_REF, "HEAD", "--", path) for path in touched}

    # NEW: OLD's tree changed like a release, as an sdist in the cache, pinned and materialized.
    old_tree = read_tar(repo.run("archive", "--format=tar", "--prefix=vllm/", OLD_BASE_REF).stdout)
    new_tree, facts = make_new_tree(old_tree, diffs, delta)
    build = work / "build"
    build.mkdir()
    new_tarball = build / f"vllm-{NEW_VERSION}.tar.gz"
    write_sdist(new_tarball, f"vllm-{NEW_VERSION}", new_tree)
    artifact = Artifact(new_tarball.name, sha256_file(new_tarball), "")
    new_pin = Pin(Version(NEW_VERSION), "sdist", old_pin.remote, f"v{NEW_VERSION}", None, artifact, (), None)
    _seed_download(cache, artifact, new_tarball)
    new_base = project.base(new_pin)
    write_pin(patches / "pins.toml", dataclasses.replace(new_pin, base_commit=new_base.commit))
    repo.run("fetch", "--quiet", "--no-tags", str(new_base.repo), f"{BASE_REF}:{NEW_BASE_REF}")
    stat = repo.out("diff", "--shortstat", "-M", OLD_BASE_REF, NEW_BASE_REF)
    facts.update(
        files=len(old_tree),
        size=sum(len(c) for _, c in old_tree.values()),
        delta=stat,
        patches=len(series.patches),
        patch_bytes=sum(len(p.data) for p in series.patches),
    )
    return Fixture(
        work=work,
        root=root,
        cache=cache,
        repo=repo_dir,
        old_version=OLD_VERSION,
        new_version=NEW_VERSION,
        old_base=old_base.commit,
        new_base=new_base.commit,
        old_head=old_head,
        patches=len(series.patches),
        touched=touched,
        facts=facts,
    )
