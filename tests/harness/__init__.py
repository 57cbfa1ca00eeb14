"""The shared test harness, an importable package (`from tests.harness import Workspace`).

trees: synthetic vLLM releases (source trees, sdists, stock-like wheels); index: a local package index
over real HTTP; repos: real git repositories and a maintainer's patch commits; workspace: a vpatch
project in a tmp dir and the CLI run in-process or as CI runs it; real: the pinned vLLM venvs and wheels
of the integration tests; kv_stream_peer.py: a script (run by path) that replays KV-event frames over ZMQ.
"""

from tests.harness.index import LocalIndex
from tests.harness.real import patched_wheel_of, stock_env_of
from tests.harness.repos import AUTHOR_ENV, DIFF_AUTHORSHIP, commit_in, commit_tree, git_repo
from tests.harness.trees import (
    WHEEL_TAG,
    compiled_blob,
    default_tree,
    make_sdist,
    make_wheel,
    module_text,
    package_files,
    sha256,
    version_file,
    zip_of,
)
from tests.harness.workspace import Workspace, assert_series_round_trips, env_var, run_vpatch

__all__ = [
    "AUTHOR_ENV",
    "DIFF_AUTHORSHIP",
    "WHEEL_TAG",
    "LocalIndex",
    "Workspace",
    "assert_series_round_trips",
    "commit_in",
    "commit_tree",
    "compiled_blob",
    "default_tree",
    "env_var",
    "git_repo",
    "make_sdist",
    "make_wheel",
    "module_text",
    "package_files",
    "patched_wheel_of",
    "run_vpatch",
    "sha256",
    "stock_env_of",
    "version_file",
    "zip_of",
]
