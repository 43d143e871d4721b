"""The docs keep up with the code: README, CI script, command help."""
from __future__ import annotations

import os
import re

import pytest

from lossctl import registry

from conftest import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].startswith("pip install . && lossctl eval sample_data/")
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert block[1] in ci


@pytest.mark.parametrize("spec", registry.all_losses(), ids=lambda s: s.name)
def test_readme_catalogue_lists_every_loss(spec):
    assert f"| `{spec.name}`" in README


@pytest.mark.parametrize("command", ["eval", "list", "explain", "merge"])
def test_every_command_has_help(cli, command):
    r = cli(command, "--help")
    assert r.code == 0 and len(r.out) > 200


def test_every_eval_option_is_in_the_readme(cli):
    text = cli("eval", "--help").out
    options = set(re.findall(r"(--[a-z][a-z-]+)", text)) - {"--help", "--no-logits"}
    missing = {o for o in options if o not in README}
    assert not missing, missing
