"""`vpatch conform NEW --against [OLD]`: pick the sides, run the contracts, write the evidence file.

OLD defaults to the last pinned release before NEW whose series still carries the feature (the first of
`--features`); the evidence file is OUT/<project>-<NEW>-against-<OLD>.json, and with `--save` also
patches/conformance/ (where `vpatch retire` and `vpatch status` read it).
"""

from __future__ import annotations

from pathlib import Path

from toolkit.contracts import kv, pd
from toolkit.contracts.run import evidence_name, run_contracts, write_results
from toolkit.contracts.sides import TransportConfig, prepare_side
from toolkit.errors import VpatchError
from toolkit.features import parent_of
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.records.contract import BuildSpec, ContractResults

FEATURES = (kv.FEATURE, pd.FEATURE)


def default_old(project: Project, new_pin: Pin, feature: str) -> Pin:
    """The last pinned release before NEW whose series carries a patch of `feature`."""
    carriers = [
        pin
        for pin in project.pins.pins
        if pin.version < new_pin.version
        and project.has_series(pin)
        and any(parent_of(p.feature) == feature for p in project.series(pin).patches)
    ]
    if not carriers:
        raise VpatchError(f"no pinned release before {new_pin.version} carries {feature}: pass --against OLD")
    return max(carriers, key=lambda pin: pin.version)


def parse_features(text: str) -> list[str]:
    wanted = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FEATURES]
    if unknown or not wanted:
        raise VpatchError(
            f"unknown feature(s) {', '.join(unknown) or '(none)'}: contracts exist for {', '.join(FEATURES)}"
        )
    return wanted


def conform_against(
    project: Project,
    new: BuildSpec,
    old: BuildSpec,
    *,
    features: list[str],
    configs: list[TransportConfig],
    out_dir: Path,
    workloads: list[str] | None = None,
    save: bool = False,
) -> tuple[ContractResults, list[Path]]:
    nixl = pd.FEATURE in features
    sides = [
        prepare_side(project, "old", old, nixl=nixl and old.kind == "dynamo-base"),
        prepare_side(project, "new", new, nixl=nixl and new.kind == "dynamo-base"),
    ]
    pin = project.pins.get(new.version)
    results = run_contracts(pin.project, sides, configs, features, out_dir / "contracts", workloads=workloads)
    name = evidence_name(pin.project, new, old)
    paths = [write_results(results, out_dir / name)]
    if save:
        paths.append(write_results(results, project.options.patches_dir / "conformance" / name))
    return results, paths
