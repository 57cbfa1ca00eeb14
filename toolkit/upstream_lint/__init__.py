"""vLLM's own linters, at the release a series is for, over what the series changes (`vpatch check --lint`).

`config` reads the release's `.pre-commit-config.yaml`, `tools` runs each hook from a cached venv of its
pinned version, `attribute` finds the patch that wrote each line, `run` puts them together. docs/lint.md
says what is run, what is not, and why findings on upstream's own lines are not reported.
"""

from toolkit.upstream_lint.attribute import Finding
from toolkit.upstream_lint.run import LintResult, lint_series

__all__ = ["Finding", "LintResult", "lint_series"]
