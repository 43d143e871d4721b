"""What `list`, `explain`, `--help` and the internal-error message say must stand on its own.

A user who ran `pip install lossctl` has no sample_data/ folder and none of the project's
design documents: every example runs as printed (its data in a here-document), and no
text sends the reader to a document they do not have.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from lossctl import __version__, registry

from conftest import ROOT

# documents only the project's authors have, and the folder a pip install does not ship
PRIVATE = re.compile(r"LOSSES\.md|CLI\.md|STYLE\.md|seam\.md|[Ee]rrat(um|a)\b|\bthe seed\b|seed's|sample_data|"
                     r"\bthe spec\b|spec's")


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory):
    """A `lossctl` on PATH, as after `pip install`, and an empty working directory."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "lossctl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lossctl "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env, tmp_path_factory.mktemp("empty")


@pytest.mark.parametrize("spec", registry.all_losses(), ids=lambda s: s.name)
def test_every_example_runs_as_printed(shell_env, spec):
    env, cwd = shell_env
    r = subprocess.run(["bash", "-c", spec.example], capture_output=True, env=env, cwd=cwd)
    assert r.returncode == 0, (spec.name, r.stderr.decode())
    doc = json.loads(r.stdout)  # not a terminal: the json document
    assert [x["loss"] for x in doc["results"]] == [spec.name]
    assert all(math.isfinite(x["value"]) for x in doc["results"])
    assert os.listdir(cwd) == []  # nothing needed, nothing left


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


@pytest.mark.parametrize("spec", registry.all_losses(), ids=lambda s: s.name)
def test_explain_names_no_document_the_user_lacks(cli, spec):
    texts = list(_strings(cli("explain", spec.name, "-f", "json").json()))
    texts += [cli("explain", spec.name).out, cli("explain", spec.name, "-f", "markdown").out]
    for text in texts:
        assert not PRIVATE.search(text), (spec.name, PRIVATE.search(text).group(0), text)


def test_list_names_no_document_the_user_lacks(cli):
    for form in ("json", "markdown", "table"):
        out = cli("list", "-f", form).out
        assert out and not PRIVATE.search(out), (form, PRIVATE.search(out))


def test_help_names_no_document_the_user_lacks(cli):
    import typer

    from lossctl.cli import app

    for name in [None, *typer.main.get_command(app).commands]:
        out = cli(*([name] if name else []), "--help").out
        assert out and not PRIVATE.search(out), (name, PRIVATE.search(out))


def test_an_internal_error_says_what_to_send(cli, monkeypatch):
    import lossctl.catalog

    def broken(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(lossctl.catalog, "render_list", broken)
    r = cli("list", "-f", "json")
    assert r.code == 3 and r.out == "" and r.err.count("\n") == 1
    assert "internal error" in r.err and "RuntimeError: a bug" in r.err and __version__ in r.err
    assert "--debug" in r.err and "command" in r.err
    assert "http" not in r.err and "Traceback" not in r.err
    with pytest.raises(RuntimeError, match="a bug"):  # --debug: the traceback, for the report
        cli("list", "-f", "json", "--debug")
