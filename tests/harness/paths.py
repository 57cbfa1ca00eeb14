"""Where the repository and the tests are, for tests at any depth of tests/ (no parents[N] counting)."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
