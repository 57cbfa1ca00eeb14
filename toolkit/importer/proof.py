"""The round-trip proof: the planned series applied afresh must land clean and re-export byte-identically."""

from __future__ import annotations

import tempfile
from pathlib import Path

from toolkit import tempnames
from toolkit.apply import CLEAN, apply_series
from toolkit.checkout import UPSTREAM_REF, Checkout
from toolkit.errors import VpatchError
from toolkit.export import ExportPlan, plan_export
from toolkit.lint import lint_headers
from toolkit.model import Pin, Series, load_series, parse_patch
from toolkit.project import Project


def prove_round_trip(
    project: Project,
    pin: Pin,
    checkout: Checkout,
    plan: ExportPlan,
    series: Series,
    features: dict[str, str],
    rendered: set[str],
) -> None:
    """Apply the planned series to the base afresh: the imported patches must land clean and re-export identically."""
    git = checkout.git
    git.reset_hard(UPSTREAM_REF)
    git.clean_all()
    existing = len(series.patches)
    scratch = project.options.cache_dir / "tmp"
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("import"), dir=scratch) as tmp:
        staged = Path(tmp) / plan.directory.name
        staged.mkdir()
        for name, data in plan.patches:
            (staged / name).write_bytes(data)
        (staged / "series").write_text(plan.series_text, encoding="utf-8")
        candidate = load_series(staged, pin.version)
        for patch in candidate.patches[existing:]:
            problems = lint_headers(patch, features)
            if problems:
                raise VpatchError(f"imported patch {patch.name}: {problems[0].message}")
        result = apply_series(checkout, candidate)
        for outcome in result.outcomes[existing:]:
            if outcome.status != CLEAN:
                raise VpatchError(
                    f"imported patch {outcome.name} does not apply cleanly to {pin.label} ({outcome.status}: "
                    f"{'; '.join(outcome.details)})"
                )
        again = plan_export(checkout, staged)
        for (name, data), (_, redone) in zip(plan.patches, again.patches, strict=True):
            if name in rendered and data != redone:
                raise VpatchError(f"{name} does not re-export byte-identically after the import")


def check_written(plan: ExportPlan, pin: Pin) -> None:
    written = load_series(plan.directory, pin.version)
    on_disk = {p.name: p.data for p in written.patches}
    for name, data in plan.patches:
        if on_disk.get(name) != data:
            raise VpatchError(f"{name} was not written as planned", path=plan.directory)
        parse_patch(plan.directory / name, data)
