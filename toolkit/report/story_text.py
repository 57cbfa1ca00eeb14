"""The story in words: the switch release and its sentence, and the short text of a cell.

The switch is the first pinned release whose verdict is stock or stock + plugin and from which every later
pinned release agrees; the sentence says what the default is from there on and why (the series is empty,
what stock vLLM does and since when, what the plugin adds by which module, on which contract files). With
no switch it says which capabilities still need dynamo-base at the newest pin, and names a release that was
stock (+ plugin) when a later one needs patches again.
"""

from __future__ import annotations

from toolkit.features import describe
from toolkit.records.story import Capability, Cell, Release, Switch
from toolkit.records.verdict import engine_label
from toolkit.verdict_features import patch_span


def short(cell: Cell) -> str:
    """`carried 0005–0009 (in pd-disagg)`, `plugin since 0.32.0`, `retired since 0.9.0`, `retired, native since
    0.16.0` (a release reached by a jump: no patch of it retired), `n/a`."""
    if cell.status == "carried":
        span = patch_span(cell.patches) if cell.patches else "?"
        return f"carried {span}" + (f" (in {cell.within})" if cell.within else "")
    if cell.status == "retired" and not cell.patches:  # no patch of it left a series: upstream has it natively
        return f"retired, native since {cell.since or '?'}"
    if cell.status in ("plugin", "retired"):
        return f"{cell.status} since {cell.since or '?'}"
    return "n/a"


def detail(cell: Cell) -> str:
    """What a plugin or retired cell rests on, in one line (empty for the others)."""
    if cell.status not in ("plugin", "retired"):
        return cell.note if cell.status == "not-applicable" else ""
    parts = []
    if cell.status == "plugin":
        parts.append(f"{cell.plugin or 'the plugin'}: {cell.module or 'module not recorded'}")
    if cell.items:
        parts.append(", ".join(cell.items))
    if cell.evidence:
        parts.append("evidence " + ", ".join(cell.evidence))
    if cell.judged_at:
        parts.append(f"as judged at {cell.judged_at}")
    return "; ".join(parts)


def _leaves(caps: list[Capability]) -> list[str]:
    return [c.name for c in caps if not c.has_parts]


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def switch_of(name: str, caps: list[Capability], releases: list[Release]) -> Switch:
    """The switch over `releases` (in version order), computed from their verdicts and cells."""
    if not releases:
        return Switch(None, None, "no pinned release, so no recommended default")
    start = len(releases)
    while start > 0 and releases[start - 1].stock_default:
        start -= 1
    if start < len(releases):
        return _switch(name, caps, releases, start)
    return _no_switch(name, caps, releases)


def _switch(name: str, caps: list[Capability], releases: list[Release], start: int) -> Switch:
    first, later = releases[start], releases[start + 1 :]
    leaves = _leaves(caps)
    who = f"stock {name}"
    if first.engine == "stock+plugin":
        who += f" + the dynamo-base plugin ({first.plugin})" if first.plugin else " + the dynamo-base plugin"
    stock_from = next(
        (r.version for i, r in enumerate(later) if all(x.engine == "stock" for x in later[i:])),
        None,
    )
    if first.engine == "stock+plugin" and stock_from is not None:
        who += f" (stock alone from {stock_from} on)"
    cells = [c for c in first.cells if c.capability in leaves]
    stock = [c for c in cells if c.status == "retired"]
    plugin = [c for c in cells if c.status == "plugin"]
    parts = [f"{name} {first.version}'s series is empty"]
    if stock:
        parts.append(f"stock {name} does {', '.join(f'{c.capability} (since {c.since})' for c in stock)}")
    if plugin:
        by_module: dict[str, list[str]] = {}
        for c in plugin:
            by_module.setdefault(c.module or "module not recorded", []).append(c.capability)
        modules = "; ".join(f"{m}: {', '.join(names)}" for m, names in by_module.items())
        parts.append(f"{first.plugin or plugin[0].plugin or 'the plugin'} delivers {modules}")
    files = first.contracts or sorted({f for c in cells for f in c.evidence})
    if files:
        parts.append(f"on the contract evidence {', '.join(files)}")
    earlier: dict[str, list[str]] = {}
    for c in cells:
        if c.judged_at:
            earlier.setdefault(c.judged_at, []).append(c.capability)
    if earlier:
        parts.append(" and ".join(f"{', '.join(names)} on {at}'s evidence" for at, names in earlier.items()))
    because = ", ".join(parts)
    if later:
        agree = f"every later pinned release ({', '.join(r.version for r in later)}) agrees"
    else:
        agree = "it is the newest pin"
    sentence = f"{who} is the recommended default from {first.version} on, because {because}; {agree}."
    return Switch(first.version, first.engine, sentence)


def _no_switch(name: str, caps: list[Capability], releases: list[Release]) -> Switch:
    newest = releases[-1]
    leaves = _leaves(caps)
    carried = [c for c in newest.cells if c.capability in leaves and c.status == "carried"]
    needs = [c.capability for c in carried]
    patches = sorted({p for c in carried for p in c.patches})
    head = (
        f"dynamo-base stays the recommended default (no pinned release from which stock {name}, with or "
        "without the dynamo-base plugin, is enough)"
    )
    if needs:
        what = ", ".join(describe(needs))
        verb = _plural(len(needs), "still needs", "still need")
        tail = f"at the newest pin, {newest.version}, {what} {verb} dynamo-base (patches {patch_span(patches)})"
    elif newest.engine is None:
        tail = f"the newest pin, {newest.version}, has no verdict ({newest.summary})"
    else:
        tail = f"the newest pin, {newest.version}, is {engine_label(newest.engine)} ({newest.summary})"
    sentence = f"{head}: {tail}"
    was = [i for i, r in enumerate(releases) if r.stock_default]
    if was:
        last = releases[was[-1]]
        back = releases[was[-1] + 1]
        again = "needs dynamo-base again" if back.engine == "dynamo-base" else "has no verdict"
        sentence += f"; {last.version} was {engine_label(last.engine)}, but {back.version} {again}"
    return Switch(None, None, sentence + ".", needs)
