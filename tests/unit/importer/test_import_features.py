"""`vpatch import` splitting a mixed fork by feature, and `vpatch feature add` declaring features.

The forks are the synthetic vllm 1.0 trees of test_import (real `diff -ruN`, real git); every import
that succeeds must pass `vpatch check`, every refusal must leave patches/ as it was.
"""

from __future__ import annotations

import tomllib

import pytest

from tests.harness import DIFF_AUTHORSHIP, module_text
from tests.unit.importer.test_import import (
    FORK_BLOCK_POOL,
    FORK_SCHEDULER,
    KV_EVENTS,
    assert_refused,
    base_and_fork,
    checkout_files,
    diff_ruN,
    expected,
    import_diff,
    parsed,
    run,
    series_names,
    user_files,
)

# A fork mixing the two default features with a file neither map rule names (README.md).
MIXED: dict[str, str | None] = {
    "vllm/core/kv_events.py": KV_EVENTS,
    "vllm/core/block_pool.py": FORK_BLOCK_POOL,
    "vllm/engine/args.py": module_text("args").replace("VALUE_12 = 12", "VALUE_12 = 1212"),
    "vllm/core/scheduler.py": FORK_SCHEDULER,
    "README.md": "# vllm, forked\n",
}
KV_FILES = ["vllm/core/block_pool.py", "vllm/core/kv_events.py", "vllm/core/scheduler.py"]


def feature_of_files(ws, names: list[str]) -> dict[str, str]:
    got = {}
    for name in names:
        mail = parsed(ws, name)
        for change in mail.files:
            got[change.path] = mail.feature
    return got


def test_flags_split_a_mixed_diff_per_feature_and_the_default_takes_the_rest(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, MIXED)
    patch = str(diff_ruN(tmp_path))
    args = ["import", patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "vllm/core/**=kv-routing"]
    code, data, _ = run(
        ws, capsys, *args, "--feature", "vllm/engine/*.py=pd-disagg", "--feature", "pd-disagg", "--json"
    )
    assert code == 0
    # grouped per feature in order of first appearance (diff -ruN's order: README.md first, the default's)
    assert [(p["feature"], sorted(p["files"])) for p in data["patches"]] == [
        ("pd-disagg", ["README.md", "vllm/engine/args.py"]),
        ("kv-routing", KV_FILES),
    ]
    assert all(p["subject"].startswith(f"[{p['feature']}] ") for p in data["patches"])
    names = series_names(ws)
    assert len(names) == 2
    assert feature_of_files(ws, names) == {
        "README.md": "pd-disagg",
        "vllm/engine/args.py": "pd-disagg",
        **dict.fromkeys(KV_FILES, "kv-routing"),
    }
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0") == 0
    assert checkout_files(ws, "1.0", MIXED) == expected(MIXED)


@pytest.mark.parametrize("kind", ["plain", "toml"])
def test_a_feature_map_file_with_split_per_file(pinned, tmp_path, capsys, kind):
    ws = pinned
    base_and_fork(tmp_path, MIXED)
    patch = str(diff_ruN(tmp_path))
    if kind == "plain":
        feature_map = tmp_path / "features.txt"
        feature_map.write_text("# fork layout\nvllm/core/** kv-routing\nvllm/engine/** = pd-disagg\n*.md pd-disagg\n")
    else:
        feature_map = tmp_path / "features.toml"
        feature_map.write_text(
            '[map]\n"vllm/core/**" = "kv-routing"\n"vllm/engine/**" = "pd-disagg"\n"*.md" = "pd-disagg"\n'
        )
    code, data, _ = import_diff(ws, capsys, patch, "--feature-map", str(feature_map), "--split", "per-file", "--json")
    assert code == 0
    got = [(p["feature"], p["files"]) for p in data["patches"]]
    # per feature, then per file inside each feature's group
    assert got == [
        ("pd-disagg", ["README.md"]),
        ("pd-disagg", ["vllm/engine/args.py"]),
        *[("kv-routing", [f]) for f in KV_FILES],
    ]
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_a_flag_rule_wins_over_the_map(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, {"vllm/core/kv_events.py": KV_EVENTS, "vllm/core/block_pool.py": FORK_BLOCK_POOL})
    patch = str(diff_ruN(tmp_path))
    (tmp_path / "map.txt").write_text("vllm/** kv-routing\n")
    code, data, _ = import_diff(
        ws,
        capsys,
        patch,
        "--feature",
        "vllm/core/block_pool.py=pd-disagg",
        "--feature-map",
        str(tmp_path / "map.txt"),
        "--json",
    )
    assert code == 0
    assert {f: p["feature"] for p in data["patches"] for f in p["files"]} == {
        "vllm/core/block_pool.py": "pd-disagg",
        "vllm/core/kv_events.py": "kv-routing",
    }


def test_unmatched_files_are_listed_one_line_each_and_refused_without_a_default(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, MIXED)
    patch = diff_ruN(tmp_path)
    text = patch.read_text().splitlines()
    before = user_files(ws)
    code, _, err = import_diff(ws, capsys, str(patch), "--feature", "vllm/core/**=kv-routing")
    assert code == 1
    unmatched = [line for line in err if line.startswith("unmatched: ")]
    # README.md and vllm/engine/args.py, each with the diff line where its section starts
    assert len(unmatched) == 2, err
    for path, line in zip(["README.md", "vllm/engine/args.py"], unmatched, strict=True):
        where, number, shown, _ = line.removeprefix("unmatched: ").split(":", 3)
        assert where == "fork.diff" and shown.strip() == path
        assert path in text[int(number) - 1], (line, text[int(number) - 1])
    assert err[-1] == (
        "vpatch: error: 2 changed file(s) match no feature rule (listed above); "
        "add rules or give a default --feature NAME"
    )
    assert user_files(ws) == before
    assert not ws.series_dir("1.0").exists()


def test_undeclared_features_are_refused_with_a_did_you_mean(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, MIXED)
    patch = str(diff_ruN(tmp_path))
    message = assert_refused(
        ws, capsys, [patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routnig"], "did you mean"
    )
    assert "unknown feature 'kv-routnig'; did you mean 'kv-routing'?" in message
    assert "vpatch feature add kv-routnig" in message
    message = assert_refused(
        ws,
        capsys,
        [patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "vllm/**=pd-disag", "--feature", "kv-routing"],
        "pd-disag'",
    )
    assert "did you mean 'pd-disagg'?" in message and "vllm/**" in message
    (tmp_path / "map.txt").write_text("vllm/** kv-routing\n\nREADME.md docs\n")
    message = assert_refused(
        ws, capsys, [patch, "--version", "1.0", "--feature-map", str(tmp_path / "map.txt")], "docs"
    )
    assert "map.txt:3: README.md: unknown feature 'docs'" in message
    (tmp_path / "bad.txt").write_text("vllm/** kv-routing extra\n")
    assert_refused(ws, capsys, [patch, "--version", "1.0", "--feature-map", str(tmp_path / "bad.txt")], "bad.txt:1:")
    assert_refused(
        ws,
        capsys,
        [patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "a", "--feature", "b"],
        "a second default feature",
    )


def test_feature_add_declares_in_pins_toml_and_import_accepts_it(pinned, tmp_path, capsys):
    ws = pinned
    pins = ws.patches / "pins.toml"
    (pins.parent / "pins.toml").write_text(pins.read_text() + "# kept comment\n")
    code, _, _ = run(ws, capsys, "feature", "add", "licence-headers", "--description", "fork licence headers")
    assert code == 0
    document = tomllib.loads(pins.read_text())
    assert document["features"]["licence-headers"] == "fork licence headers"
    assert "kv-routing" in document["features"] and document["pins"]
    assert "# kept comment" in pins.read_text()
    # already declared, a bad name: refused, pins.toml unchanged
    before = pins.read_bytes()
    code, _, err = run(ws, capsys, "feature", "add", "licence-headers")
    assert code == 1 and err == [
        "vpatch: error: project/patches/pins.toml: feature 'licence-headers' is already declared (fork licence headers)"
    ]
    assert run(ws, capsys, "feature", "add", "Has Space")[0] == 1
    assert pins.read_bytes() == before
    code, data, _ = run(ws, capsys, "feature", "list", "--json")
    assert code == 0 and [f["feature"] for f in data] == ["kv-routing", "licence-headers", "pd-disagg"]
    # the new feature is usable at once
    base_and_fork(tmp_path, MIXED)
    patch = str(diff_ruN(tmp_path))
    code, data, _ = import_diff(
        ws, capsys, patch, "--feature", "*.md=licence-headers", "--feature", "kv-routing", "--json"
    )
    assert code == 0
    assert next((p["feature"], p["files"]) for p in data["patches"]) == ("licence-headers", ["README.md"])
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_names_and_subjects_say_what_each_patch_touches_and_stay_unique(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, MIXED)
    patch = str(diff_ruN(tmp_path))
    args = [
        "import",
        patch,
        "--version",
        "1.0",
        *DIFF_AUTHORSHIP,
        "--feature",
        "vllm/core/**=kv-routing",
        "--feature",
        "pd-disagg",
    ]
    code, data, _ = run(ws, capsys, *args, "--split", "per-file", "--json")
    assert code == 0
    assert [(p["name"], p["subject"]) for p in data["patches"]] == [
        ("0001-pd-disagg-readme.patch", "[pd-disagg] README.md"),
        ("0002-pd-disagg-engine-args.patch", "[pd-disagg] vllm/engine/args.py"),
        ("0003-kv-routing-core-block-pool.patch", "[kv-routing] vllm/core/block_pool.py"),
        ("0004-kv-routing-core-kv-events.patch", "[kv-routing] vllm/core/kv_events.py"),
        ("0005-kv-routing-core-scheduler.patch", "[kv-routing] vllm/core/scheduler.py"),
    ]
    # several files: the common directory; a second patch touching the same place gets a unique name
    for diff, modules, made in [
        ("more.diff", "ab", ("0006-kv-routing-core.patch", "[kv-routing] vllm/core/ (2 files)")),
        ("more2.diff", "ef", ("0007-kv-routing-core-2.patch", "[kv-routing] vllm/core/ (2 files) (2)")),
    ]:
        (tmp_path / diff).write_text(
            "".join(f"--- /dev/null\n+++ b/vllm/core/extra_{m}.py\n@@ -0,0 +1 @@\n+{m.upper()} = 1\n" for m in modules)
        )
        code, data, _ = import_diff(ws, capsys, str(tmp_path / diff), "--feature", "kv-routing", "--json")
        assert code == 0
        assert [(p["name"], p["subject"]) for p in data["patches"]] == [made]
    assert len({n.split("-", 1)[1] for n in series_names(ws)}) == len(series_names(ws)) == 7
    assert ws.run("check", "1.0", "--no-wheels") == 0
