"""The public API of a Python package, read statically from its files (nothing is imported).

For every public module (no path component starting with `_`, tests excluded) the
public top-level names, and for classes their public methods, with each function's
parameters (name, kind, whether it has a default). Two surfaces compare as
"only additions" when nothing public disappeared and every changed signature is
compatible: the old parameters keep their names, kinds and order, and every new
parameter has a default (or is *args / **kwargs).
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

Params = tuple[tuple[str, str, bool], ...]  # (name, kind, has_default)


@dataclass(frozen=True)
class Symbol:
    name: str  # module.qualname
    kind: str  # function | class | method | variable
    params: Params | None = None


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Params:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults_from = len(positional) - len(args.defaults)
    params: list[tuple[str, str, bool]] = []
    for index, arg in enumerate(positional):
        kind = "positional-only" if index < len(args.posonlyargs) else "positional"
        params.append((arg.arg, kind, index >= defaults_from))
    if args.vararg:
        params.append((args.vararg.arg, "var-positional", True))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((arg.arg, "keyword-only", default is not None))
    if args.kwarg:
        params.append((args.kwarg.arg, "var-keyword", True))
    return tuple(params)


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__") and name == "__init__")


def module_symbols(module: str, source: str) -> dict[str, Symbol]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    symbols: dict[str, Symbol] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
            symbols[f"{module}.{node.name}"] = Symbol(f"{module}.{node.name}", "function", _params(node))
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            qual = f"{module}.{node.name}"
            symbols[qual] = Symbol(qual, "class")
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(item.name):
                    symbols[f"{qual}.{item.name}"] = Symbol(f"{qual}.{item.name}", "method", _params(item))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and _public(item.target.id):
                    symbols[f"{qual}.{item.target.id}"] = Symbol(f"{qual}.{item.target.id}", "variable")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and _public(target.id):
                    symbols[f"{module}.{target.id}"] = Symbol(f"{module}.{target.id}", "variable")
    return symbols


def wheel_surface(wheel: str, package: str = "vllm") -> dict[str, Symbol]:
    """The public API of `package` as shipped in a wheel."""
    surface: dict[str, Symbol] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            path = PurePosixPath(name)
            if path.suffix != ".py" or path.parts[0] != package:
                continue
            parts = list(path.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts) or "tests" in parts:
                continue
            surface.update(module_symbols(".".join(parts), archive.read(name).decode("utf-8", "replace")))
    return surface


def compatible(old: Params | None, new: Params | None) -> bool:
    if old is None or new is None:
        return old == new
    new_names = [p[0] for p in new]
    old_names = [p[0] for p in old]
    if new_names[: len(old_names)] != old_names:
        # parameters may only be appended (or become keyword-only with defaults after *args)
        positions = [new_names.index(n) if n in new_names else -1 for n in old_names]
        if -1 in positions or positions != sorted(positions):
            return False
    by_name = {p[0]: p for p in new}
    for name, kind, has_default in old:
        _, new_kind, new_default = by_name[name]
        if new_kind != kind or (has_default and not new_default):
            return False
    return all(p[2] for p in new if p[0] not in old_names)


@dataclass(frozen=True)
class SurfaceDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed_compatibly: tuple[str, ...]
    changed_incompatibly: tuple[str, ...]


def compare(stock: dict[str, Symbol], patched: dict[str, Symbol]) -> SurfaceDiff:
    added = sorted(set(patched) - set(stock))
    removed = sorted(set(stock) - set(patched))
    compatible_changes, incompatible = [], []
    for name in sorted(set(stock) & set(patched)):
        a, b = stock[name], patched[name]
        if a == b:
            continue
        if a.kind == b.kind and compatible(a.params, b.params):
            compatible_changes.append(name)
        else:
            incompatible.append(name)
    return SurfaceDiff(tuple(added), tuple(removed), tuple(compatible_changes), tuple(incompatible))
