"""The contract's runs in a deployment's terms, for the verdict's lines (toolkit/verdict_features.py).

A contract result names its transport configurations by run (`new-bind-sha256`: NEW's side, the engine's
endpoint `tcp://*:P`, prefix caching hashed with sha256; toolkit/contracts/sides.py). A deployment knows
them by its settings: vLLM's `prefix_caching_hash_algo` (`--prefix-caching-hash-algo`) and the endpoint of
its `kv_events_config` (`tcp://*:PORT`, which the engine binds, or `tcp://127.0.0.1:PORT`, which upstream
vLLM connects to, so the router binds it). Runs that one setting picks out are named by it ("with
prefix_caching_hash_algo=sha256"); a run without a transport record (the P/D runs) by its name.
"""

from __future__ import annotations

import re

from toolkit.records.contract import ConfigRun, ContractResults
from toolkit.records.status import Status

HASH = "prefix_caching_hash_algo"
ENDPOINT = "kv_events_config endpoint"
# how an item that is not met reads, for one item and for several
_ONE = {Status.FAIL: "fails", Status.NOT_PROVIDED: "not provided"}
_MANY = {Status.FAIL: "fail", Status.NOT_PROVIDED: "are not provided"}

Outcome = list[tuple[Status, str]]  # the statuses an item is not met by, each with the runs' phrase


def settings(run: ConfigRun) -> dict[str, str]:
    """The deployment settings a run was made under (none for a run without a transport record)."""
    transport = run.transport
    if transport is None:
        return {}
    found = {ENDPOINT: re.sub(r":\d+$", ":PORT", transport.endpoint)}
    if transport.hash_algo and transport.hash_algo != "default":  # the engine tier runs the release's default
        found = {HASH: transport.hash_algo, **found}
    return found


def _setting(key: str, value: str) -> str:
    return f"{key}={value}" if key == HASH else f"{key} {value}"


def which(runs: list[ConfigRun], among: list[ConfigRun]) -> str:
    """How `runs` stand out among `among` (the runs that judged the same thing): "" when they are all of them,
    `with SETTING` when one setting's value picks out exactly them, else each run's settings (or its name)."""
    names = {r.name for r in runs}
    if names == {r.name for r in among}:
        return ""
    for key in (HASH, ENDPOINT):
        values = {settings(r).get(key) for r in runs}
        value = values.pop() if len(values) == 1 else None
        if value is not None and {r.name for r in among if settings(r).get(key) == value} == names:
            return f"with {_setting(key, value)}"
    shown = [
        " and ".join(_setting(k, v) for k, v in settings(r).items()) if settings(r) else f"in {r.name}" for r in runs
    ]
    return " or ".join(s if s.startswith("in ") else f"with {s}" for s in shown)


def _runs_of(result: ContractResults, feature: str) -> list[ConfigRun]:
    return [r for r in result.runs if r.side == "new" and any(i.feature == feature for i in r.items)]


def outcomes(result: ContractResults, feature: str) -> dict[str, Outcome]:
    """item -> how NEW does not meet it (status and where, in a deployment's terms), for the items of `feature`
    that are not met everywhere, in the order the result has them."""
    by_item: dict[str, list[tuple[ConfigRun, Status]]] = {}
    for run in _runs_of(result, feature):
        for item in run.items:
            if item.feature == feature:
                by_item.setdefault(item.item, []).append((run, item.status))
    found: dict[str, Outcome] = {}
    for name, seen in by_item.items():
        among = [run for run, _ in seen]
        groups: dict[Status, list[ConfigRun]] = {}
        for run, status in seen:
            if status != Status.PASS:
                groups.setdefault(status, []).append(run)
        if groups:
            found[name] = [(status, which(runs, among)) for status, runs in groups.items()]
    return found


def _how(outcome: Outcome, words: dict[Status, str]) -> str:
    return ", ".join(" ".join(filter(None, (words.get(s, s.label), where))) for s, where in outcome)


def lacking(result: ContractResults, feature: str) -> list[str]:
    """ContractResults.lacking in a deployment's terms: `load-figures (not provided)`, `cached-prefixes (fails
    with prefix_caching_hash_algo=sha256)`."""
    return [f"{name} ({_how(outcome, _ONE)})" for name, outcome in outcomes(result, feature).items()]


def needs(result: ContractResults, feature: str) -> str:
    """The condition a deployment must meet where `feature` passes in some configurations only: the setting
    that picks out those (`needs prefix_caching_hash_algo=builtin`), else the others (`except with ...`); ""
    when it passes in none or in every one."""
    among = _runs_of(result, feature)
    passing = [r for r in among if all(i.status == Status.PASS for i in r.items if i.feature == feature)]
    if not passing or len(passing) == len(among):
        return ""
    where = which(passing, among)
    if where.startswith("with ") and " or " not in where:
        return f"needs {where.removeprefix('with ')}"
    return f"except {which([r for r in among if r not in passing], among)}"


def otherwise(result: ContractResults, feature: str) -> str:
    """What is not met of `feature`, items that are not met alike together: `cached-prefixes and overlap fail
    with prefix_caching_hash_algo=sha256`."""
    grouped: dict[tuple[tuple[Status, str], ...], list[str]] = {}
    for name, outcome in outcomes(result, feature).items():
        grouped.setdefault(tuple(outcome), []).append(name)
    parts = []
    for how, names in grouped.items():
        words = _MANY if len(names) > 1 else {**_ONE, Status.NOT_PROVIDED: "is not provided"}
        listed = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
        parts.append(f"{listed} {_how(list(how), words)}")
    return "; ".join(parts)
