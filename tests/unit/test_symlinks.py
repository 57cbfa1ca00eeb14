"""Symlinks in patches: a link leaving the tree is refused by every command that reads the series.

Links inside the tree apply and are exported as usual. The overlay build refuses any link in the
wheel's package (a wheel is a zip: pip installs a member as a plain file holding the link's target),
while a link outside the package (tests/, docs/) is not shipped and does not stop the build.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from tests.harness import AUTHOR_ENV
from toolkit.git import Git
from toolkit.symlinks import target_problem


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file and link under `root` (links by their target), for asserting that nothing was written."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            result[str(path.relative_to(root))] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            result[str(path.relative_to(root))] = path.read_bytes()
    return result


def link_patch(ws, links: dict[str, str], subject: str) -> bytes:
    """A format-patch mail, made by git in the checkout, creating `links` (path -> target)."""
    checkout = ws.checkout("1.0")
    repo = Git(checkout)
    for path, target in links.items():
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, checkout / path)
    repo.run("add", "-A")
    message = f"{subject}\n\nUpstream-Status: Pending\nFeature: kv-routing\n"
    repo.run("commit", "-q", "-F", "-", input=message.encode(), env=AUTHOR_ENV)
    mail = repo.run("format-patch", "--stdout", "-1", "HEAD").stdout
    repo.run("reset", "-q", "--hard", "HEAD~1")
    return mail


def export_links(ws, links: dict[str, str], subject: str) -> None:
    """Commit `links` in the checkout and `vpatch export` them, the way a maintainer makes a patch."""
    checkout = ws.checkout("1.0")
    for path, target in links.items():
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, checkout / path)
    repo = Git(checkout)
    repo.run("add", "-A")
    message = f"{subject}\n\nUpstream-Status: Pending\nFeature: kv-routing\n"
    repo.run("commit", "-q", "-F", "-", input=message.encode(), env=AUTHOR_ENV)
    assert ws.run("export", "1.0") == 0


@pytest.fixture
def links(pinned):
    """vllm 1.0 pinned and applied (empty series); patches are made by the tests."""
    pinned.write_series("1.0", {})
    assert pinned.run("apply", "1.0") == 0
    return pinned


def one_error(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("vpatch: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.mark.parametrize(
    "target",
    ["../../../etc/passwd", "/etc/passwd", "../../..", "../.git/config", "sub/../../../x"],
)
def test_a_link_out_of_the_tree_is_refused_by_apply_check_and_build(links, capsys, tmp_path, target):
    ws = links
    mail = link_patch(ws, {"vllm/evil": target}, "[Core] evil link")
    ws.write_series("1.0", {"0001-core-evil-link.patch": mail})
    line = mail.decode().split("\n").index("+" + target) + 1
    before = tree_snapshot(ws.root)
    for argv in (
        ("apply", "1.0", "--force"),
        ("check", "1.0", "--no-wheels"),
        ("build", "1.0", "-o", str(tmp_path / "out"), "--no-verify"),
    ):
        capsys.readouterr()
        assert ws.run(*argv) == 1, argv
        out = capsys.readouterr()
        text = out.out + out.err
        assert f"vllm-1.0/0001-core-evil-link.patch:{line}: patch makes vllm/evil a symlink to {target!r}" in text
        assert "symlinks must stay in the tree" in text and "Traceback" not in text
        assert tree_snapshot(ws.root) == before, argv
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_link_out_of_the_tree_in_an_imported_mail_is_refused(links, capsys, tmp_path):
    ws = links
    mail = tmp_path / "evil.patch"
    mail.write_bytes(link_patch(ws, {"vllm/evil": "../../../etc/passwd"}, "[Core] evil link"))
    before = tree_snapshot(ws.root)
    capsys.readouterr()
    assert ws.run("import", str(mail), "--version", "1.0") == 1
    message = one_error(capsys)
    assert "evil.patch:" in message and "vllm/evil" in message and "symlink" in message
    assert tree_snapshot(ws.root) == before


def test_a_link_inside_the_tree_applies_and_round_trips(links, capsys, tmp_path):
    ws = links
    export_links(ws, {"tests/readme": "../README.md", "docs/core": "../vllm/core"}, "[Tests] links")
    assert ws.run("apply", "1.0", "--force") == 0
    checkout = ws.checkout("1.0")
    assert os.readlink(checkout / "tests/readme") == "../README.md"
    assert (checkout / "docs/core/scheduler.py").is_file()
    assert ws.run("check", "1.0", "--no-wheels") == 0
    # not in the wheel's package: the overlay build ships the wheel without them
    capsys.readouterr()
    assert ws.run("build", "1.0", "-o", str(tmp_path / "out"), "--no-runtime", "--no-install-check", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    with zipfile.ZipFile(data["wheels"][0]["wheel"]) as wheel:
        names = wheel.namelist()
        provenance = json.loads(wheel.read(next(n for n in names if n.endswith(".dist-info/dynamo_base.json"))))
    assert provenance["files"]["not_shipped"] == ["docs/core", "tests/readme"]
    assert not [n for n in names if n.startswith(("docs/", "tests/"))]


def test_the_overlay_refuses_a_link_in_the_package(links, capsys, tmp_path):
    ws = links
    export_links(ws, {"vllm/core/pool.py": "block_pool.py"}, "[Core] alias the pool")
    assert ws.run("check", "1.0", "--no-wheels") == 0  # a link inside the tree is a valid patch
    capsys.readouterr()
    assert ws.run("build", "1.0", "-o", str(tmp_path / "out"), "--no-verify") == 1
    message = one_error(capsys)
    assert "0001-core-alias-the-pool.patch changes vllm/core/pool.py: it is a symlink, which a wheel cannot carry" in (
        message
    )
    assert "--mode source" in message
    assert not list((tmp_path / "out").glob("*.whl"))


@pytest.mark.parametrize(
    ("link", "target", "problem"),
    [
        ("vllm/a", "b.py", None),
        ("vllm/a", "../README.md", None),
        ("vllm/core/a", "../../setup.py", None),
        ("vllm/a", "./core/./x", None),
        ("vllm/a", "../..", "a target outside the tree"),
        ("a", "..", "a target outside the tree"),
        ("vllm/a", "/etc", "an absolute target"),
        ("vllm/a", "core/../../x", "'..' after a directory name (which may itself be a link)"),
        ("vllm/a", "../.git/hooks", "a target inside .git"),
        ("vllm/a", "", "an empty target"),
    ],
)
def test_target_problem(link, target, problem):
    assert target_problem(link, target) == problem
