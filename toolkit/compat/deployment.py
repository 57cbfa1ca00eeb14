"""A deployment's dynamo-base configuration, read from the file it starts vLLM with, migrated key by key.

The file is a JSON object or a YAML file (vLLM's `--config` format) of engine arguments (`kv_transfer_config` /
`kv-transfer-config`, `kv_events_config`, and a router's `kv_transfer_params`; every other argument is left as it
is, so a JSON object of just those three keys is the smallest such file), or a command line (`vllm serve MODEL
--kv-transfer-config '{...}' ...`, shell words, `\\` continuations, `#` comments). `migrate_deployment` applies
the compatibility table (`toolkit.compat.migrate.migrate`) to its sections and says the result as one line per
changed key (`PATH: OLD -> NEW`, `OLD_PATH -> NEW_PATH`, `PATH: removed`, `PATH: added VALUE`, `env NAME=VALUE`),
a refusal as `FILE:LINE: PATH: what to do`, and gives the deployment back with the migrated sections.
`vpatch config migrate FILE` is the command (toolkit/commands/config.py).
"""

from __future__ import annotations

import difflib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.compat.migrate import Migration, migrate
from toolkit.errors import VpatchError
from toolkit.tomlkeys import unknown_key_message

# engine argument (underscore form) -> the `where` prefix migrate() writes in its lines
SECTIONS = {
    "kv_events_config": "--kv-events-config: ",
    "kv_transfer_config": "--kv-transfer-config: ",
    "kv_transfer_params": "kv_transfer_params: ",
}
FLAGS = {f"--{name.replace('_', '-')}": name for name in SECTIONS if name != "kv_transfer_params"}
# A top-level key this close to a section name (difflib ratio) is its misspelling, refused with a did-you-mean:
# of the 298 EngineArgs fields of vLLM 0.8.4, 0.8.5, 0.9.0, 0.9.1, 0.10.2 and 0.32.0 (as installed) the closest,
# ec_transfer_config, is 0.889; one letter wrong, missing or extra in a section name is at least 0.93.
TYPO_CUTOFF = 0.9
PLUGIN_PROVIDES = "dynamo-base-plugin publishes the load metrics: set DYNAMO_LOAD_METRICS_ENDPOINT, docs/plugin.md"


@dataclass
class Deployment:
    """A deployment's configuration as read from FILE: the three sections and how to write them back."""

    path: Path
    text: str
    kind: str  # "json", "yaml" or "args"
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)  # json/yaml: the whole object
    argv: list[str] = field(default_factory=list)  # args: the shell words

    def line_of(self, path: str) -> int:
        """The first line naming the key of `path` (after its section's own line), else the section's, else 1."""
        section, _, rest = path.partition(".")
        rows = self.text.split("\n")
        names = (section, section.replace("_", "-"))
        start = next((n for n, row in enumerate(rows) if any(name in row for name in names)), 0)
        key = rest.rsplit(".", 1)[-1] if rest else ""
        if key:
            for n in range(start, len(rows)):
                if f'"{key}"' in rows[n] or f"'{key}'" in rows[n] or f"{key}:" in rows[n]:
                    return n + 1
        return start + 1


@dataclass
class DeploymentMigration:
    """What `migrate_deployment` found: the change lines, the refusals (`FILE:LINE: PATH: message`) and warnings."""

    deployment: Deployment
    migration: Migration
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    migrated: Any = None  # the migrated document (json/yaml) or argv (args)

    @property
    def ok(self) -> bool:
        return not self.errors


def _section_value(value: Any, name: str, path: Path) -> dict[str, Any]:
    if isinstance(value, str):  # vLLM takes the JSON as a string too
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise VpatchError(f"{name}: not JSON: {exc.msg} (column {exc.colno})", path=path) from None
    if not isinstance(value, dict):
        raise VpatchError(f"{name}: must be a JSON object, not {json.dumps(value)}", path=path)
    return value


def _read_document(deployment: Deployment, data: Any) -> None:
    if not isinstance(data, dict):
        raise VpatchError("must be an object of vLLM engine arguments", path=deployment.path, line=1)
    deployment.document = data
    for key, value in data.items():
        name = str(key).removeprefix("--").replace("-", "_")
        if name in SECTIONS:
            deployment.sections[name] = _section_value(value, name, deployment.path)
        elif difflib.get_close_matches(name, SECTIONS, n=1, cutoff=TYPO_CUTOFF):
            message = unknown_key_message(str(key), SECTIONS)
            raise VpatchError(message, path=deployment.path, line=deployment.line_of(str(key)))


def _read_args(deployment: Deployment) -> None:
    try:
        words = shlex.split(deployment.text.replace("\\\n", " "), comments=True)  # joined continuation lines
    except ValueError as exc:
        raise VpatchError(f"not a command line: {exc}", path=deployment.path) from None
    deployment.argv = words
    for index, word in enumerate(words):
        flag, eq, inline = word.partition("=")
        if flag.split(".", 1)[0] in FLAGS and "." in flag:
            raise VpatchError(
                f"{flag}: give {flag.split('.', 1)[0]} as one JSON object to migrate it",
                path=deployment.path,
                line=deployment.line_of(FLAGS[flag.split(".", 1)[0]]),
            )
        if flag in FLAGS:
            if not eq and index + 1 >= len(words):
                raise VpatchError(f"{flag}: no value", path=deployment.path)
            value = inline if eq else words[index + 1]
            deployment.sections[FLAGS[flag]] = _section_value(value, FLAGS[flag], deployment.path)


def read_deployment(path: Path) -> Deployment:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VpatchError(exc.strerror or str(exc), path=path) from None
    stripped = text.lstrip()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        deployment = Deployment(path, text, "yaml")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise VpatchError("not YAML", path=path, line=mark.line + 1 if mark else None) from None
        _read_document(deployment, data if data is not None else {})
    elif path.suffix == ".json" or stripped.startswith("{"):
        deployment = Deployment(path, text, "json")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VpatchError(f"not JSON: {exc.msg}", path=path, line=exc.lineno) from None
        _read_document(deployment, data)
    else:
        deployment = Deployment(path, text, "args")
        _read_args(deployment)
    return deployment


def _path_of(line: str) -> tuple[str, str]:
    """A migrate() line (`--kv-transfer-config: kv_connector_extra_config.x: message`) -> (dotted path, message)."""
    for section, where in SECTIONS.items():
        if line.startswith(where):
            key, _, message = line.removeprefix(where).partition(": ")
            return f"{section}.{key}", message
    head, _, message = line.partition(": ")  # a whole-run line, such as an unsupported --to
    return head, message


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value}


def change_lines(before: dict[str, Any], after: dict[str, Any], env: dict[str, str], provided: set[str]) -> list[str]:
    """One line per changed key; a key whose value went to one new place (and only it) is a move."""
    removed = {k: v for k, v in before.items() if k not in after}
    added = {k: v for k, v in after.items() if k not in before}
    lines = [
        f"{k}: {json.dumps(before[k])} -> {json.dumps(after[k])}"
        for k in before
        if k in after and before[k] != after[k]
    ]
    moved: set[str] = set()
    for old, value in removed.items():
        targets = [k for k, v in added.items() if v == value and k not in moved]
        sources = [k for k, v in removed.items() if v == value]
        if len(targets) == 1 and len(sources) == 1:
            lines.append(f"{old} -> {targets[0]}")
            moved.add(targets[0])
        elif old in provided:
            lines.append(f"{old}: removed ({PLUGIN_PROVIDES})")
        else:
            lines.append(f"{old}: removed")
    lines += [f"{k}: added {json.dumps(v)}" for k, v in added.items() if k not in moved]
    lines += [f"env {name}={value}" for name, value in env.items()]
    return lines


def migrate_deployment(path: Path, to: str, *, with_plugin: bool = True, strict: bool = False) -> DeploymentMigration:
    """Read a deployment's vLLM configuration from `path` and migrate it to stock vLLM `to` + the plugin (the
    command's default, as `migrate`'s), or to stock alone with `with_plugin=False`."""
    deployment = read_deployment(path)
    given = deployment.sections
    result = migrate(
        to,
        kv_events_config=given.get("kv_events_config"),
        kv_transfer_config=given.get("kv_transfer_config"),
        kv_transfer_params=given.get("kv_transfer_params"),
        with_plugin=with_plugin,
        strict=strict,
    )
    done = DeploymentMigration(deployment, result)
    where = str(path)
    for line in result.errors:
        dotted, message = _path_of(line)
        in_file = dotted.split(".", 1)[0] in SECTIONS  # else a whole-run line (`--to 0.8.4: ...`), as it is
        done.errors.append(f"{where}:{deployment.line_of(dotted)}: {dotted}: {message}" if in_file else line)
    for line in result.warnings:
        dotted, message = _path_of(line)
        done.warnings.append(f"{where}: {dotted}: {message}")
    if not result.ok:
        return done
    out = {name: getattr(result, name) for name in SECTIONS if name in given}
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name, value in given.items():
        if out[name] is not None:  # a section left out whole gets one line below, not one per key
            before.update(flatten(value, name))
            after.update(flatten(out[name], name))
    provided = {_path_of(line)[0] for line in result.plugin}
    done.changes = change_lines(before, after, result.env, provided)
    for name in given:
        if out[name] is None:
            done.changes.append(f"{name}: leave it out (events are off, and stock builds a publisher from any value)")
    done.migrated = rewrite(deployment, out)
    return done


def rewrite(deployment: Deployment, out: dict[str, Any]) -> Any:
    """The deployment with the migrated sections (a section stock must not be given is left out)."""
    if deployment.kind != "args":
        document: dict[str, Any] = {}
        for key, value in deployment.document.items():
            name = str(key).removeprefix("--").replace("-", "_")
            if name not in out:
                document[key] = value
            elif out[name] is not None:
                document[key] = out[name] if isinstance(value, dict) else json.dumps(out[name], separators=(",", ":"))
        return document
    argv: list[str] = []
    words = iter(deployment.argv)
    for word in words:
        flag, eq, _ = word.partition("=")
        if flag not in FLAGS:
            argv.append(word)
            continue
        if not eq:
            next(words, None)
        value = out[FLAGS[flag]]
        if value is not None:
            argv += [flag, json.dumps(value, separators=(",", ":"))]
    return argv
