"""The default-engine verdict: which engine a launcher should default to for a release, and why.

Decided by toolkit/verdict.py from the series and the feature-contract evidence (toolkit/records/contract.py);
shown by `vpatch status` (whole, under `verdict`), written into OUT/ci-summary.json (`verdicts`, this same
record) and read from there by `vpatch report`: one schema for writing and reading.

Per release the engine is one of three, each derived from contract evidence per feature:

- `dynamo-base` ("dynamo-base needed"): a feature still has active patches; `patches` names them and
  `lacks` what stock vLLM lacks of its contract;
- `stock+plugin` ("stock + plugin"): no feature needs a patch, and at least one feature's contract is met
  only with a plugin installed beside stock vLLM; `plugin` names it and `adds` what it adds;
- `stock`: stock vLLM alone meets every carried feature's contract (or the retirement was forced).

`engine` None: no verdict (no series, a series that does not load, a retired feature no build meets).
A feature met in some transport configurations only lists the others under `unmet` (a condition on the
deployment, in its settings: "cached-prefixes (fails with prefix_caching_hash_algo=sha256)",
toolkit/verdict_terms.py), and the summary says so ("needs prefix_caching_hash_algo=builtin: ...").
"""

from __future__ import annotations

from typing import Literal

import msgspec

from toolkit.records.contract import PluginRef

Engine = Literal["dynamo-base", "stock+plugin", "stock"]
ENGINES: tuple[str, ...] = ("dynamo-base", "stock+plugin", "stock")
LABELS = {"dynamo-base": "dynamo-base needed", "stock+plugin": "stock + plugin", "stock": "stock"}


def engine_label(engine: str | None) -> str:
    return LABELS.get(engine or "", "no verdict")


class FeatureVerdict(msgspec.Struct, omit_defaults=True):
    """One feature on one release: which build meets its contract, and on what evidence."""

    feature: str
    engine: Engine | None
    summary: str
    patches: list[str] = []  # dynamo-base: the feature's active patches
    plugin: PluginRef | None = None  # stock+plugin: the plugin whose side met the contract
    adds: list[str] = []  # stock+plugin: contract items the plugin side meets that stock alone does not
    lacks: list[str] = []  # the items stock alone does not meet, each with how and where
    unmet: list[str] = []  # the items the chosen build still does not meet (conditions), with where
    evidence: list[str] = []  # the contract files (patches/conformance/, out/conform/) or records used
    # retired at an earlier release and without contract evidence on this one: the last earlier release whose
    # evidence judged it (this verdict is that one's)
    judged_at: str | None = None

    @property
    def label(self) -> str:
        return engine_label(self.engine)


class Verdict(msgspec.Struct, omit_defaults=True):
    """`engine` is dynamo-base, stock+plugin, stock or None (no verdict); `records` only for an empty
    series: the files that record why its patches were retired; `feature_verdicts` per feature."""

    engine: Engine | None
    active_patches: int
    features: list[str]
    summary: str
    records: list[str] | None = None
    # feature -> the contract items no stock result of this release passes (in a deployment's terms)
    lacks: dict[str, list[str]] | None = None
    contracts: list[str] | None = None
    feature_verdicts: list[FeatureVerdict] = []
    plugin: PluginRef | None = None  # installed beside the engine: a feature met by stock + plugin

    @property
    def label(self) -> str:
        return engine_label(self.engine)

    def as_dict(self) -> dict:
        return msgspec.to_builtins(self)
