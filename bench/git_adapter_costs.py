"""What a git run costs through the adapter against GitPython's ways of doing the same (issue 18, item 4).

The figures in toolkit/git/__init__.py's docstring come from this script: per call, `rev-parse` and a blob
read through `Git` (one `git` process each, fixed configuration and environment), through GitPython's
command runner, and from GitPython's object database with a `Repo` made per call or kept. Each call is timed
`--repeat` times after one warm-up; the median and the best are printed (the machine's 2 cores are shared,
so read the best beside the median and run it more than once).

    .venv/bin/python bench/git_adapter_costs.py [--repo BARE_OR_WORK_TREE] [--repeat 60]

Without `--repo`, the first sdist base in the cache (`~/.cache/vpatch/bases/sdist/`) is used.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import git as gitpython

from toolkit.git import Git, git_env


def timed(call: Callable[[], object], repeat: int) -> str:
    call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return f"median {statistics.median(samples):6.2f} ms   best {min(samples):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--repeat", type=int, default=60)
    args = parser.parse_args()
    where = args.repo or next(iter(sorted((Path.home() / ".cache/vpatch/bases/sdist").glob("*.git"))))
    ours, kept = Git(where), gitpython.Repo(where)
    env, argv = git_env(), ["git", "rev-parse", "HEAD"]
    blob = next(item for item in kept.head.commit.tree.traverse() if getattr(item, "type", "") == "blob")
    path = str(blob.path)
    rows: list[tuple[str, Callable[[], object]]] = [
        ("Repo() (discovery)", lambda: gitpython.Repo(where)),
        ("rev-parse through Git.run", lambda: ours.run("rev-parse", "HEAD")),
        ("rev-parse, bare subprocess.run", lambda: subprocess.run(argv, cwd=where, env=env, capture_output=True)),
        ("rev-parse through GitPython's runner", lambda: kept.git.execute(argv)),
        ("GitPython rev_parse, Repo kept", lambda: kept.rev_parse("HEAD^{commit}").hexsha),
        ("GitPython rev_parse, Repo per call", lambda: gitpython.Repo(where).rev_parse("HEAD^{commit}").hexsha),
        (f"blob through Git.blob ({blob.size} B)", lambda: ours.blob("HEAD", path)),
        ("blob from GitPython, Repo kept", lambda: (kept.head.commit.tree / path).data_stream.read()),
    ]  # fmt: skip
    fresh: list[gitpython.Repo] = []  # a per-call Repo is kept alive until its stream is read

    def blob_fresh() -> bytes:
        fresh[:] = [gitpython.Repo(where)]
        return bytes((fresh[0].commit("HEAD").tree / path).data_stream.read())

    rows.append(("blob from GitPython, Repo per call", blob_fresh))
    print(f"{where} ({args.repeat} calls each)")
    for label, call in rows:
        print(f"  {label:<42} {timed(call, args.repeat)}")


if __name__ == "__main__":
    main()
