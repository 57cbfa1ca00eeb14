"""The crash-safety tests' killed runs are forked from a process that imported vpatch (tests/harness/fork_server.py):
such a run must answer as `python -m toolkit.cli` does."""

from __future__ import annotations

import re
import shutil

from tests.unit.test_fault_injection import killed_run, tree
from toolkit.faults import KILLED


def test_a_forked_run_answers_as_a_new_interpreter_does(pinned, tmp_path):
    """The trials' kills run forked from a process that imported vpatch (tests/harness/fork_server.py): the
    same exit code, output and tree as `python -m toolkit.cli`, for a command, a usage error and a kill."""
    ws = pinned
    ws.publish("1.1")
    cases = (("", ("pin", "list")), ("", ("pin", "--no-such-flag")), ("atomic.write:1", ("pin", "add", "1.1")))
    for fault, args in cases:
        runs, trees = [], []
        for fresh in (False, True):
            root = tmp_path / f"{args[1]}-{fresh}"
            shutil.copytree(ws.root, root, symlinks=True)
            proc = killed_run(root, ws.cache, ws.index.url, fault, *args, fresh=fresh)
            said = (
                re.sub(r"\(\d+\.\d+s\)", "(T)", out.replace(str(root), "ROOT")) for out in (proc.stdout, proc.stderr)
            )
            runs.append((proc.returncode, *said))
            trees.append({k: v.replace(str(root).encode(), b"ROOT") for k, v in tree(root, visible_only=True).items()})
        assert runs[0] == runs[1], args
        assert trees[0] == trees[1], args
    assert runs[0][0] == KILLED and "download and verify vllm-1.1.tar.gz" in runs[0][2]
