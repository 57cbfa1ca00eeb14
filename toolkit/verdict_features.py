"""Per-feature verdicts from contract evidence (used by toolkit/verdict.py).

For each feature of a release: active patches → dynamo-base needed; otherwise the best build whose contract
results (`vpatch conform NEW --against OLD`, toolkit/records/contract.py) meet it, in this order: stock in
every configuration, stock + plugin in every configuration, stock in some configurations, stock + plugin in
some. "Some" means every item of the feature passes in at least one transport configuration; the others
are listed as conditions (`unmet`). A feature no build meets gets no verdict (engine None).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit import verdict_terms as terms
from toolkit.lifecycle.upstream import contract_results, lacking_in
from toolkit.records.contract import ContractResults, PluginRef
from toolkit.records.status import Status
from toolkit.records.verdict import FeatureVerdict


@dataclass(frozen=True)
class Evidence:
    """One contract result for one feature on the release's NEW side."""

    file: str
    kind: str  # "stock" or "stock+plugin"
    results: ContractResults
    feature: str

    @property
    def runs(self) -> dict[str, dict[str, Status]]:
        """run name -> item -> status, on the NEW side."""
        found: dict[str, dict[str, Status]] = {}
        for run in self.results.runs:
            for item in run.items:
                if run.side == "new" and item.feature == self.feature:
                    found.setdefault(run.name, {})[item.item] = item.status
        return found

    @property
    def everywhere(self) -> bool:
        return self.results.feature_passes(self.feature)

    @property
    def somewhere(self) -> bool:
        return any(all(s == Status.PASS for s in items.values()) for items in self.runs.values())

    @property
    def lacking(self) -> list[str]:
        """The items not met everywhere, in a deployment's terms (toolkit/verdict_terms.py)."""
        return terms.lacking(self.results, self.feature)

    @property
    def condition(self) -> str:
        """What a deployment needs where the feature passes in some configurations only, else ""."""
        return "" if self.everywhere else terms.needs(self.results, self.feature)

    @property
    def plugin(self) -> PluginRef | None:
        return self.results.new.plugins[0] if self.results.new.plugins else None


def gather(paths: list[Path], version: str) -> dict[str, list[Evidence]]:
    """feature -> its contract evidence for `version`, in file order (committed files first)."""
    found: dict[str, list[Evidence]] = {}
    for path, results in contract_results(paths, version):
        if results.new.kind not in ("stock", "stock+plugin"):
            continue
        for feature in results.features:
            found.setdefault(feature, []).append(Evidence(path.name, results.new.kind, results, feature))
    return found


def _pick(evidence: list[Evidence]) -> Evidence | None:
    """The build the verdict rests on: the first result of the best-ranked kind (the module's docstring)."""
    ranked = [
        (0, "stock", "everywhere"),
        (1, "stock+plugin", "everywhere"),
        (2, "stock", "somewhere"),
        (3, "stock+plugin", "somewhere"),
    ]
    for _, kind, how in ranked:
        for entry in evidence:
            if entry.kind == kind and getattr(entry, how):
                return entry
    return None


def _adds(chosen: Evidence, stock: list[Evidence]) -> list[str]:
    """Items the plugin side passes in a configuration where no stock result does (or where stock has no run)."""
    adds: set[str] = set()
    for run, items in chosen.runs.items():
        for item, status in items.items():
            if status == Status.PASS and all(s.runs.get(run, {}).get(item) != Status.PASS for s in stock):
                adds.add(item)
    return sorted(adds)


def stock_lacks(evidence: Iterable[Evidence]) -> tuple[list[str], list[str]]:
    """What stock alone lacks of the feature: the items no stock result passes (`lacking_in`), and the files
    of those results."""
    stock = [entry for entry in evidence if entry.kind == "stock"]
    lacks = lacking_in([e.results for e in stock], stock[0].feature, terms.lacking) if stock else []
    return lacks, [e.file for e in stock]


@dataclass(frozen=True)
class Weighed:
    """A feature's contract evidence on one release, with what its verdict reads of it worked out once (`weigh`):
    what stock alone lacks (`stock_lacks`), the files of the stock results, and the result `chosen` to judge by."""

    evidence: list[Evidence]
    lacks: list[str]
    stock_files: list[str]
    chosen: Evidence | None


def weigh(evidence: list[Evidence]) -> Weighed:
    """`evidence` (one feature's, as `gather` finds it) with what stock lacks and the build chosen."""
    lacks, stock_files = stock_lacks(evidence)
    return Weighed(evidence, lacks, stock_files, _pick(evidence))


def patch_span(names: list[str]) -> str:
    """`0005-a.patch ... 0014-j.patch` as `0005–0014` (consecutive numbers), else the names."""
    numbers = [n.split("-", 1)[0] for n in names]
    if not all(n.isdigit() for n in numbers):
        return ", ".join(names)
    spans: list[list[str]] = []
    for number in numbers:
        if spans and int(number) == int(spans[-1][-1]) + 1:
            spans[-1].append(number)
        else:
            spans.append([number])
    return ", ".join(s[0] if len(s) == 1 else f"{s[0]}–{s[-1]}" for s in spans)


def feature_verdict(name: str, feature: str, version: str, patches: list[str], weighed: Weighed) -> FeatureVerdict:
    """The verdict of one feature on one release (`name`: the project's display name, e.g. vLLM), from its active
    `patches`, else its `weighed` contract evidence."""
    evidence, lacks, stock_files, chosen = weighed.evidence, weighed.lacks, weighed.stock_files, weighed.chosen
    if patches:
        summary = f"patches {patch_span(patches)}"
        if lacks:
            summary += f" (stock {name} {version} lacks {', '.join(item.split(' (')[0] for item in lacks)})"
        return FeatureVerdict(feature, "dynamo-base", summary, patches=patches, lacks=lacks, evidence=stock_files)
    if chosen is None:
        why = f"stock {name} {version} lacks {'; '.join(lacks)}" if lacks else "no build meets its contract"
        files = sorted({e.file for e in evidence})
        return FeatureVerdict(feature, None, f"no build meets its contract: {why}", lacks=lacks, evidence=files)
    unmet = [] if chosen.everywhere else chosen.lacking
    # in a deployment's terms: "needs prefix_caching_hash_algo=builtin: cached-prefixes and overlap fail with ..."
    needs = condition if (condition := chosen.condition).startswith("needs ") else ""
    condition = f"; {': '.join(filter(None, (needs, terms.otherwise(chosen.results, feature))))}" if unmet else ""
    if chosen.kind == "stock":
        return FeatureVerdict(
            feature,
            "stock",
            f"stock {name} {version} meets the contract{condition}",
            unmet=unmet,
            evidence=[chosen.file],
        )
    plugin = chosen.plugin
    adds = _adds(chosen, [e for e in evidence if e.kind == "stock"])
    what = plugin.label if plugin is not None else "a plugin"
    delivers = plugin.delivers.get(feature) if plugin is not None else None
    summary = f"{what} adds {', '.join(adds) or 'nothing stock lacks'}"
    summary += f" ({delivers})" if delivers else ""
    files = [chosen.file] + [f for f in stock_files if f != chosen.file]
    return FeatureVerdict(
        feature,
        "stock+plugin",
        summary + condition,
        plugin=plugin,
        adds=adds,
        lacks=lacks,
        unmet=unmet,
        evidence=files,
    )


def condition_of(chosen: Evidence | None) -> str:
    """The condition a deployment must meet for the build `chosen` (`Weighed.chosen`: `needs ...`), else ""."""
    return chosen.condition if chosen is not None else ""


def headline(verdict: FeatureVerdict, condition: str = "") -> str:
    """The feature's part of the release's one-line verdict: its engine, what the plugin adds and the condition
    (`kv-routing: stock + plugin (adds load-figures; needs prefix_caching_hash_algo=builtin)`); the feature's own
    line (its `summary`) has the rest."""
    details = [f"as judged at {verdict.judged_at}"] if verdict.judged_at else []
    details += [f"adds {', '.join(verdict.adds)}"] if verdict.adds else []
    details += [condition] if condition else []
    if not details and verdict.engine is None:
        details = [verdict.summary.split(": ", 1)[0]]  # why there is none
    elif not details and verdict.engine == "stock" and not verdict.summary.startswith("stock "):
        details = [verdict.summary]  # retired by force, or without a contract
    return f"{verdict.feature}: {verdict.label}" + (f" ({'; '.join(details)})" if details else "")
