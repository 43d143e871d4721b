"""Shared test helpers: run the CLI in-process or as a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_data")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Call lossctl in-process: cli("eval", path, "-f", "json") -> Run."""
    from lossctl.cli import main

    def run(*args: str) -> Run:
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return Run(code, cap.out, cap.err)

    return run


def run_subprocess(*args: str, stdin: bytes | None = None, env: dict | None = None) -> Run:
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-m", "lossctl", *map(str, args)], input=stdin, capture_output=True, env=e, cwd=ROOT)
    return Run(p.returncode, p.stdout.decode(), p.stderr.decode())


@pytest.fixture
def write_csv(tmp_path):
    """write_csv("name.csv", "y,yhat\\n1,2\\n") -> path"""

    def write(name: str, text: str | bytes) -> str:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return str(path)

    return write


def split_example(example: str) -> tuple[list[str], bytes]:
    """A registry example, ``lossctl eval - ARGS <<'EOF'`` + data + ``EOF`` → (ARGS after 'lossctl', the data)."""
    import shlex

    command, _, rest = example.partition(" <<'EOF'\n")
    assert rest.endswith("\nEOF"), example
    return shlex.split(command)[1:], rest[: -len("EOF")].encode()


@pytest.fixture
def run_example(cli, monkeypatch):
    """Run a registry example in-process, its here-document as standard input."""
    import io

    def run(example: str, *extra: str) -> Run:
        args, data = split_example(example)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        return cli(*args, *extra)

    return run
