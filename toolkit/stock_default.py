"""What the commands that walk pins say about a release whose series is empty (stock vLLM is its engine)."""

from __future__ import annotations

from toolkit.model import Pin


def empty_series_reason(pin: Pin) -> str:
    """One clause: why there is no dynamo-base build of `pin` to make, verify or compare."""
    name = "vLLM" if pin.project == "vllm" else pin.project
    flavor = pin.flavor("cpu")
    builds = f" (here its CPU build, {flavor.project} {flavor.version})" if flavor is not None else ""
    return (
        f"the series is empty: stock {name} {pin.version}{builds} is the engine, the dynamo-base plugin beside it "
        f"(`vpatch plugin build {pin.version}`); `vpatch status {pin.version}` gives the verdict"
    )
