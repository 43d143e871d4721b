"""Options validated once (lossctl.options): the command line, the library and check's config
accept the same values and refuse a bad one with the same rule, each naming the option its way.

The expected messages below are written out by hand (they are the contract: CLI.md, the
library's docstrings, the config's "FILE: key" form); they are not read from lossctl.options.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import lossctl
from lossctl import options
from lossctl.errors import UsageError
from lossctl.options import EvalOptions, Engine, Format, InputFormat, NanPolicy, Reduction, Task

from conftest import ROOT, SAMPLES

REG = os.path.join(SAMPLES, "regression.csv")
SNAPSHOT = os.path.join(ROOT, "tests", "fixtures", "cli_options.json")

TASK_LIST = "regression, binary, multiclass, segmentation, metric, distribution"
Y = np.array([1.0, 2.0, 4.0, 3.0])
P = np.array([1.5, 2.0, 3.0, 3.5])


def _error(r) -> str:
    """The one error line of a failed run (exit 2, nothing on stdout)."""
    assert r.code == 2 and r.out == "", (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossctl: error: "), r.err
    return lines[0][len("lossctl: error: "):]


def _toml(tmp_path, text: str, name: str = "opts.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ the enumerations


def test_the_enumerations_and_their_tuples():
    assert [m.value for m in Reduction] == ["mean", "sum", "none"]
    assert [m.value for m in NanPolicy] == ["error", "drop"]
    assert [m.value for m in Task] == TASK_LIST.split(", ")
    assert [m.value for m in Format] == ["table", "json", "jsonl", "csv", "tsv", "markdown"]
    assert [m.value for m in InputFormat] == ["csv", "tsv", "parquet", "feather", "jsonl"]
    assert [m.value for m in Engine] == ["local", "dask"]
    # each is a str, written as its value
    assert Reduction.SUM == "sum" and f"{Reduction.SUM}" == "sum" and str(NanPolicy.DROP) == "drop"
    assert " | ".join(NanPolicy) == "error | drop"


def test_every_list_of_choices_is_the_one_declaration():
    """No module keeps its own tuple of tasks, reductions, NaN policies or formats."""
    from lossctl import check_report, io, plan, registry, render
    from lossctl.advice import render as advice_render

    assert registry.TASKS is options.TASKS
    assert plan.REDUCTIONS is options.REDUCTIONS and plan.NAN_POLICIES is options.NAN_POLICIES
    assert render.FORMATS is options.FORMATS and io.FORMATS is options.INPUT_FORMATS
    assert check_report.FORMATS is options.REPORT_FORMATS and advice_render.FORMATS is options.REPORT_FORMATS


def test_options_are_reachable_from_a_bare_import():
    out = subprocess.run([sys.executable, "-c", "import lossctl; print(lossctl.options.Reduction.SUM)"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0 and out.stdout.strip() == "sum", out.stderr


def test_options_module_is_light():
    code = ("import sys, lossctl.options, lossctl.cli; "
            "print([m for m in ('numpy', 'pandas', 'pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# ------------------------------------------------------------------ the options object


def test_defaults_are_the_documented_ones():
    o = EvalOptions()
    assert (o.reduction, o.nan, o.task, o.grad, o.logits, o.ci, o.bootstrap, o.seed, o.min_rows, o.batch_rows,
            o.row_offset, o.input_format, o.engine) == \
        ("mean", "error", None, False, None, None, 1000, 0, 1, None, 0, None, "local")


def test_options_are_frozen_and_hold_enum_members():
    o = EvalOptions(reduction="sum", nan="drop", task="binary", ci=0.9, bootstrap=np.int64(50))
    assert o.reduction is Reduction.SUM and o.nan is NanPolicy.DROP and o.task is Task.BINARY
    assert type(o.bootstrap) is int and o.bootstrap == 50 and type(o.ci) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.ci = 0.5  # type: ignore[misc]
    plain = o.plain()
    assert plain["reduction"] == "sum" and type(plain["reduction"]) is str and type(plain["task"]) is str
    assert o == EvalOptions.validated(reduction=Reduction.SUM, nan=NanPolicy.DROP, task=Task.BINARY, ci=0.9,
                                      bootstrap=50)


def test_the_constructor_checks_too():
    with pytest.raises(UsageError, match=re.escape("ci must be a level in (0, 1), such as 0.95. Got 2 instead.")):
        EvalOptions(ci=2)
    with pytest.raises(UsageError, match=re.escape("unknown --nan policy 'skip'; valid: error, drop")):
        EvalOptions.validated(options.CLI, nan="skip")


def test_an_unknown_option_is_a_bug_of_the_caller():
    with pytest.raises(TypeError, match="colour"):
        EvalOptions.validated(colour="red")


@pytest.mark.parametrize("option, value", [
    ("reduction", "mean"), ("reduction", "sum"), ("reduction", "none"), ("nan", "error"), ("nan", "drop"),
    *[("task", t) for t in TASK_LIST.split(", ")], ("task", None),
    ("grad", True), ("grad", np.True_), ("logits", None), ("logits", False),
    ("ci", 0.5), ("ci", np.float32(0.9)), ("ci", None), ("bootstrap", 1), ("seed", 0), ("min_rows", 1),
    ("batch_rows", 1), ("batch_rows", None), ("row_offset", 0),
    *[("input_format", f) for f in ("csv", "tsv", "parquet", "feather", "jsonl")], ("engine", "local"),
    ("engine", "dask"),
])
def test_every_choice_and_bound_is_accepted(option, value):
    got = getattr(EvalOptions.validated(options.CLI, **{option: value}), option)
    assert got == value or (got is None and value is None)


@pytest.mark.parametrize("option, value, cli, library", [
    ("reduction", "median", "unknown reduction 'median'; valid: mean, sum, none",
     "unknown reduction 'median'; valid: mean, sum, none"),
    ("nan", "skip", "unknown --nan policy 'skip'; valid: error, drop", "unknown nan policy 'skip'; valid: error, drop"),
    ("task", "ranking", f"unknown task 'ranking'; valid tasks: {TASK_LIST}",
     f"unknown task 'ranking'; valid tasks: {TASK_LIST}"),
    ("task", "Binary", f"unknown task 'Binary'; valid tasks: {TASK_LIST}",
     f"unknown task 'Binary'; valid tasks: {TASK_LIST}"),
    ("ci", 1.5, "--ci must be a level in (0, 1), such as 0.95. Got 1.5 instead.",
     "ci must be a level in (0, 1), such as 0.95. Got 1.5 instead."),
    ("ci", 0.0, "--ci must be a level in (0, 1), such as 0.95. Got 0.0 instead.",
     "ci must be a level in (0, 1), such as 0.95. Got 0.0 instead."),
    ("ci", float("nan"), "--ci must be a level in (0, 1), such as 0.95. Got nan instead.",
     "ci must be a level in (0, 1), such as 0.95. Got nan instead."),
    ("ci", True, "--ci must be a level in (0, 1), such as 0.95. Got True instead.",
     "ci must be a level in (0, 1), such as 0.95. Got True instead."),
    ("bootstrap", 0, "--bootstrap must be at least 1. Got 0 instead.",
     "bootstrap must be a whole number of replicates ≥ 1. Got 0 instead."),
    ("bootstrap", 2.5, "--bootstrap must be at least 1. Got 2.5 instead.",
     "bootstrap must be a whole number of replicates ≥ 1. Got 2.5 instead."),
    ("seed", -1, "--seed must be at least 0. Got -1 instead.", "seed must be a whole number ≥ 0. Got -1 instead."),
    ("min_rows", 0, "--min-rows must be at least 1. Got 0 instead.",
     "min_rows must be a whole number ≥ 1. Got 0 instead."),
    ("batch_rows", 0, "--batch-rows must be at least 1. Got 0 instead.",
     "batch_rows must be a whole number ≥ 1 (or None: one batch). Got 0 instead."),
    ("batch_rows", True, "--batch-rows must be at least 1. Got True instead.",
     "batch_rows must be a whole number ≥ 1 (or None: one batch). Got True instead."),
    ("row_offset", -1, "--row-offset must be at least 0. Got -1 instead.",
     "row_offset must be a whole number ≥ 0. Got -1 instead."),
    ("input_format", "xls", "unknown input format 'xls'; valid formats: csv, tsv, parquet, feather, jsonl",
     "unknown input format 'xls'; valid formats: csv, tsv, parquet, feather, jsonl"),
    ("engine", "spark", "unknown engine 'spark'; valid engines: local, dask",
     "unknown engine 'spark'; valid engines: local, dask"),
    ("grad", "yes", "--grad must be True or False. Got 'yes' instead.", "grad must be True or False. Got 'yes' instead."),
])
def test_every_bad_value_is_refused_naming_the_option(option, value, cli, library):
    for spelling, want in ((options.CLI, cli), (options.LIBRARY, library)):
        with pytest.raises(UsageError) as e:
            EvalOptions.validated(spelling, **{option: value})
        assert str(e.value) == want
    cfg = options.config_spelling("x.toml", {option: f"data.{option}"})
    with pytest.raises(UsageError) as e:
        EvalOptions.validated(cfg, **{option: value})
    assert str(e.value).startswith("x.toml: ") and f"data.{option}" in str(e.value) and not str(e.value).endswith(".")


# ------------------------------------------------------------------ the command line


BAD_FLAGS = [
    (["--reduction", "median"], "unknown reduction 'median'; valid: mean, sum, none"),
    (["--nan", "skip"], "unknown --nan policy 'skip'; valid: error, drop"),
    (["--task", "ranking"], f"unknown task 'ranking'; valid tasks: {TASK_LIST}"),
    (["--ci", "1.5"], "--ci must be a level in (0, 1), such as 0.95. Got 1.5 instead."),
    (["--ci", "0"], "--ci must be a level in (0, 1), such as 0.95. Got 0.0 instead."),
    (["--bootstrap", "0"], "--bootstrap must be at least 1. Got 0 instead."),
    (["--seed", "-1"], "--seed must be at least 0. Got -1 instead."),
    (["--min-rows", "0"], "--min-rows must be at least 1. Got 0 instead."),
    (["--batch-rows", "0"], "--batch-rows must be at least 1. Got 0 instead."),
    (["--row-offset", "-1"], "--row-offset must be at least 0. Got -1 instead."),
    (["--input-format", "xls"], "unknown input format 'xls'; valid formats: csv, tsv, parquet, feather, jsonl"),
    (["--engine", "spark"], "unknown engine 'spark'; valid engines: local, dask"),
    (["-f", "xml"], "unknown format 'xml'; valid formats: table, json, jsonl, csv, tsv, markdown"),
]
CHECK_FLAGS = ("--nan", "--task", "--ci", "--bootstrap", "--seed", "--min-rows", "--batch-rows", "--input-format",
               "--engine")
RECOMMEND_FLAGS = ("--nan", "--task", "--batch-rows", "--input-format", "--engine")


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_cli_refuses_each_bad_value_with_its_message(cli, flags, message):
    assert _error(cli("eval", REG, "-t", "y", "-p", "yhat", *flags)) == message
    if flags[0] in CHECK_FLAGS:
        assert _error(cli("check", REG, "-t", "y", "-p", "yhat", "--assert", "mse <= 1e9", *flags)) == message
    if flags[0] in RECOMMEND_FLAGS:
        assert _error(cli("recommend", REG, "-t", "y", "-p", "yhat", *flags)) == message


def test_list_checks_its_task_the_same_way(cli):
    assert _error(cli("list", "--task", "ranking")) == f"unknown task 'ranking'; valid tasks: {TASK_LIST}"
    for task in TASK_LIST.split(", "):
        assert cli("list", "--task", task, "-f", "json").code == 0


@pytest.mark.parametrize("reduction, fmt", [("mean", "json"), ("sum", "json"), ("none", "csv")])
def test_cli_accepts_each_reduction(cli, reduction, fmt):
    r = cli("eval", REG, "-t", "y", "-p", "yhat", "-l", "mse", "--reduction", reduction, "-f", fmt)
    assert r.code == 0, r.err


@pytest.mark.parametrize("nan", ["error", "drop"])
def test_cli_accepts_each_nan_policy(cli, nan):
    for args in (["eval", REG], ["check", REG, "--assert", "mse <= 1e9"], ["recommend", REG, "--no-check"]):
        r = cli(*args, "-t", "y", "-p", "yhat", "--nan", nan, "-f", "json")
        assert r.code == 0, r.err


@pytest.mark.parametrize("task", TASK_LIST.split(", "))
def test_cli_accepts_each_task(cli, task):
    """A task that does not fit the file fails later (binding), never as an unknown task."""
    r = cli("eval", REG, "--task", task, "-f", "json")
    assert r.code == 0 or "unknown task" not in r.err, r.err
    if task == "regression":
        assert r.code == 0, r.err


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv", "tsv", "markdown"])
def test_cli_accepts_each_format(cli, fmt):
    assert cli("eval", REG, "-t", "y", "-p", "yhat", "-l", "mse", "-f", fmt).code == 0


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "feather", "jsonl"])
def test_cli_accepts_each_input_format(cli, fmt):
    r = cli("eval", REG, "-t", "y", "-p", "yhat", "--input-format", fmt, "-f", "json")
    assert "unknown input format" not in r.err
    if fmt == "csv":
        assert r.code == 0, r.err


def test_cli_engines(cli):
    assert cli("eval", REG, "-t", "y", "-p", "yhat", "--engine", "local", "-f", "json").code == 0
    r = cli("eval", REG, "-t", "y", "-p", "yhat", "--engine", "dask", "-f", "json")
    assert "unknown engine" not in r.err


def _option_rows() -> dict[str, list[dict]]:
    import typer

    from lossctl import cli as cli_mod

    cli_mod._light_coercion()
    command = typer.main.get_command(cli_mod.app)
    cli_mod._document(command)
    out: dict[str, list[dict]] = {}
    for name in ("eval", "check", "recommend"):
        rows = []
        for p in command.commands[name].params:
            key = "ARG " + p.name if p.param_type_name == "argument" else max(p.opts, key=len)
            rows.append({"name": key, "flags": sorted(p.opts) + sorted(getattr(p, "secondary_opts", [])),
                         "default": p.default, "metavar": p.metavar, "help": getattr(p, "help", None)})
        out[name] = rows
    return out


def test_the_three_commands_keep_every_option():
    """eval, check and recommend declare their options once (lossctl.cli._OPTIONS); each keeps
    every option it had (name, short flag, default, metavar, help text, order), as recorded in
    tests/fixtures/cli_options.json before they were declared once."""
    with open(SNAPSHOT, encoding="utf-8") as f:
        want = json.load(f)
    got = json.loads(json.dumps(_option_rows(), default=str))
    for command in want:
        assert [r["name"] for r in got[command]] == [r["name"] for r in want[command]], command
        for g, w in zip(got[command], want[command]):
            assert g == w, command


def test_shared_options_read_the_same_where_they_are_shared():
    rows = _option_rows()
    for long in ("--target", "--task", "--input-format", "--nan"):
        helps = {r["help"] for c in rows.values() for r in c if r["name"] == long}
        assert len(helps) == 1, long


# ------------------------------------------------------------------ the library


@pytest.mark.parametrize("kwargs, message", [
    (dict(reduction="none"), "evaluate() reduces: use reduction='mean' or 'sum' (per-row values: lossctl.per_row)"),
    (dict(reduction="median"), "evaluate() reduces: use reduction='mean' or 'sum' (per-row values: lossctl.per_row)"),
    (dict(reduction=Reduction.NONE),
     "evaluate() reduces: use reduction='mean' or 'sum' (per-row values: lossctl.per_row)"),
    (dict(ci=1.5), "ci must be a level in (0, 1), such as 0.95. Got 1.5 instead."),
    (dict(ci="0.9"), "ci must be a level in (0, 1), such as 0.95. Got '0.9' instead."),
    (dict(ci=0.9, bootstrap=0), "bootstrap must be a whole number of replicates ≥ 1. Got 0 instead."),
    (dict(bootstrap=2.5), "bootstrap must be a whole number of replicates ≥ 1. Got 2.5 instead."),
    (dict(batch_rows=0), "batch_rows must be a whole number ≥ 1 (or None: one batch). Got 0 instead."),
    (dict(batch_rows=-1), "batch_rows must be a whole number ≥ 1 (or None: one batch). Got -1 instead."),
    (dict(task="foo"), f"unknown task 'foo'; valid tasks: {TASK_LIST}"),
    (dict(seed=-1), "seed must be a whole number ≥ 0. Got -1 instead."),
    (dict(grad="yes"), "grad must be True or False. Got 'yes' instead."),
])
def test_library_refuses_each_bad_value_with_its_message(kwargs, message):
    with pytest.raises(UsageError) as e:
        lossctl.evaluate(Y, P, "mse", **kwargs)
    assert str(e.value) == message


def test_library_task_is_checked_the_same_way_by_per_row_and_recommend():
    want = f"unknown task 'foo'; valid tasks: {TASK_LIST}"
    for call in (lambda: lossctl.per_row(Y, P, "mse", task="foo"), lambda: lossctl.recommend(Y, P, task="foo")):
        with pytest.raises(UsageError) as e:
            call()
        assert str(e.value) == want


def test_library_accepts_strings_and_enum_members_alike():
    ref = float(np.mean((Y - P) ** 2))
    for reduction, value in (("mean", ref), ("sum", ref * len(Y)), (Reduction.MEAN, ref), (Reduction.SUM, ref * len(Y))):
        r = lossctl.evaluate(Y, P, "mse", reduction=reduction)
        assert r.value == pytest.approx(value, rel=1e-15)
        assert type(r.reduction) is str and r.reduction == str(reduction)  # results hold plain strings
    a = lossctl.evaluate(Y, P, "mse", task=Task.REGRESSION, ci=0.9, bootstrap=np.int64(200), seed=np.int64(3))
    b = lossctl.evaluate(Y, P, "mse", task="regression", ci=0.9, bootstrap=200, seed=3)
    assert a.ci == b.ci and a.value == b.value


@pytest.mark.parametrize("task", TASK_LIST.split(", "))
def test_library_accepts_each_task(task):
    try:
        lossctl.evaluate(Y, P, None, task=task)
    except UsageError as e:  # the task may not fit these arrays: never an unknown task
        assert "unknown task" not in str(e)
    except lossctl.InputError:
        pass


# ------------------------------------------------------------------ check's config


@pytest.mark.parametrize("text, message", [
    ("ci = 2\n", "ci must be a level in (0, 1), such as 0.95. Got 2 instead"),
    ("ci = 0.0\n", "ci must be a level in (0, 1), such as 0.95. Got 0.0 instead"),
    ("bootstrap = 0\n", "bootstrap must be at least 1. Got 0 instead"),
    ("seed = -1\n", "seed must be at least 0. Got -1 instead"),
    ("min_rows = 0\n", "min_rows must be at least 1. Got 0 instead"),
    ('[data]\nnan = "skip"\n', "unknown data.nan policy 'skip'; valid: error, drop"),
    ('[data]\ntask = "ranking"\n', f"data.task: unknown task 'ranking'; valid tasks: {TASK_LIST}"),
    ('[data]\ninput_format = "xls"\n',
     "data.input_format: unknown input format 'xls'; valid formats: csv, tsv, parquet, feather, jsonl"),
    ('[[check]]\nloss = "mse"\nmax = 1\nmin_rows = 0\n', "check[1].min_rows must be at least 1. Got 0 instead"),
    # types are the config's own check, as before
    ("ci = true\n", "ci must be a number. Got True instead"),
    ('bootstrap = "many"\n', "bootstrap must be an integer. Got 'many' instead"),
])
def test_config_refuses_each_bad_value_naming_file_and_key(cli, tmp_path, text, message):
    cfg = _toml(tmp_path, text)
    assert _error(cli("check", REG, "-t", "y", "-p", "yhat", "--config", cfg, "--assert", "mse <= 1e9")) == \
        f"{cfg}: {message}"


def test_pyproject_config_names_its_table(cli, tmp_path, monkeypatch):
    path = _toml(tmp_path, "[tool.lossctl]\nci = 1.5\n\n[tool.lossctl.data]\nnan = \"drop\"\n", "pyproject.toml")
    monkeypatch.chdir(tmp_path)
    assert _error(cli("check", REG, "-t", "y", "-p", "yhat", "--assert", "mse <= 1e9")) == \
        f"{path}: tool.lossctl.ci must be a level in (0, 1), such as 0.95. Got 1.5 instead"
    _toml(tmp_path, '[tool.lossctl.data]\nnan = "skip"\n', "pyproject.toml")
    assert _error(cli("check", REG, "-t", "y", "-p", "yhat", "--assert", "mse <= 1e9")) == \
        f"{path}: unknown tool.lossctl.data.nan policy 'skip'; valid: error, drop"


@pytest.mark.parametrize("text", [
    "ci = 0.9\nbootstrap = 50\nseed = 3\nmin_rows = 1\nlogits = false\n",
    *[f'[data]\nnan = "{n}"\n' for n in ("error", "drop")],
    *[f'[data]\ninput_format = "{f}"\n' for f in ("csv",)],
    '[data]\ntask = "regression"\n',
])
def test_config_accepts_good_values(cli, tmp_path, text):
    cfg = _toml(tmp_path, text)
    r = cli("check", REG, "-t", "y", "-p", "yhat", "--config", cfg, "--assert", "mse <= 1e9", "-f", "json")
    assert r.code == 0, r.err


@pytest.mark.parametrize("task", TASK_LIST.split(", "))
def test_config_accepts_each_task(tmp_path, task):
    from lossctl import check

    cfg = check.load_config(_toml(tmp_path, f'[data]\ntask = "{task}"\nnan = "drop"\ninput_format = "jsonl"\n'))
    assert cfg.data["task"] == task


# ------------------------------------------------------------------ one validation behind all three


def test_the_three_entry_points_share_one_rule(cli, tmp_path, monkeypatch):
    """Change the one message of --ci: the command line, the library and the config all say the new one."""
    monkeypatch.setitem(options._MESSAGES, "ci", "{name} is not a level: {v!r}.")
    assert _error(cli("eval", REG, "-t", "y", "-p", "yhat", "--ci", "2")) == "--ci is not a level: 2.0."
    assert _error(cli("check", REG, "-t", "y", "-p", "yhat", "--assert", "mse <= 1", "--ci", "2")) == \
        "--ci is not a level: 2.0."
    with pytest.raises(UsageError) as e:
        lossctl.evaluate(Y, P, "mse", ci=2)
    assert str(e.value) == "ci is not a level: 2."
    cfg = _toml(tmp_path, "ci = 2\n")
    assert _error(cli("check", REG, "-t", "y", "-p", "yhat", "--config", cfg, "--assert", "mse <= 1")) == \
        f"{cfg}: ci is not a level: 2"


def test_the_three_entry_points_share_one_list_of_tasks(cli, tmp_path, monkeypatch):
    """Take a task out of the one enumeration's tuple of values: every entry point refuses it."""
    monkeypatch.setattr(options.Task, "values", classmethod(lambda cls: ("binary",)))
    import lossctl.api

    lossctl.api._checked_options.cache_clear()  # (the library memoises the option sets it has checked)
    r = cli("eval", REG, "-t", "y", "-p", "yhat", "--task", "regression")
    assert _error(r) == "unknown task 'regression'; valid tasks: binary"
    with pytest.raises(UsageError, match="unknown task 'regression'; valid tasks: binary"):
        lossctl.evaluate(Y, P, "mse", task="regression")
    cfg = _toml(tmp_path, '[data]\ntask = "regression"\n')
    assert _error(cli("check", REG, "--config", cfg, "--assert", "mse <= 1")) == \
        f"{cfg}: data.task: unknown task 'regression'; valid tasks: binary"
    with pytest.raises(UsageError, match="unknown task 'regression'; valid tasks: binary"):
        lossctl.recommend(Y, P, task="regression")
