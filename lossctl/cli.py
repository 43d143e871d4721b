"""The command line: a thin Typer shell over lossctl's library.

Only typer and the registry are imported at start-up; numpy, pyarrow and rich's
tables load inside the commands that use them, so ``lossctl --help`` stays fast.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Any, Optional, TextIO

import typer

from lossctl import __version__
from lossctl.errors import ExitStatus, LossctlError, UsageError
from lossctl.options import (CLI, ENGINES, FORMATS, INPUT_FORMATS, NAN_POLICIES, REDUCTIONS, REPORT_FORMATS, TASKS,
                             Engine, EvalOptions)

class _PipeClosed(BaseException):
    """Standard output's reader went away (``| head``): a quiet exit 0.

    A BaseException, so that Typer's and Click's handlers (which turn a broken pipe
    into exit 1 and Ctrl-C into a silent 130) let it through to ``main``.
    """


class _Interrupted(BaseException):
    """Ctrl-C (SIGINT) during a command: ``lossctl: interrupted`` and exit 130."""


@contextlib.contextmanager
def _boundary():
    try:
        yield
    except BrokenPipeError:
        raise _PipeClosed() from None
    except KeyboardInterrupt:
        raise _Interrupted() from None
    except EOFError as e:  # Typer would turn it into a bare "Abort"; it is a bug, reported as one
        raise RuntimeError(f"unexpected end of data ({e})") from e


class _Group(typer.core.TyperGroup):
    """Every command runs through here: the one place where streams and signals end a run."""

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with _boundary():  # --help and --version write here
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        with _boundary():
            return super().invoke(ctx)


app = typer.Typer(
    name="lossctl",
    cls=_Group,
    help="Evaluate machine-learning losses and their gradients on prediction files.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_HELP = "On an internal error, show the traceback (also LOSSCTL_DEBUG=1)."
REPORT = ("please report it with the command you ran, this version, and the output of the same command "
          "run again with --debug")

# Every option of eval, check and recommend, declared once: its flags, its metavar in
# the help (so that no option reads as <list[str]>) and its help text; the choices and
# defaults come from lossctl.options. A command that says an option its own way gives
# _option its own help (what it judges, what it writes). An option declared without a
# metavar here shows its type (TEXT, INTEGER).
_D = EvalOptions()


def _choices(values: tuple[str, ...], sep: str = " | ") -> str:
    return sep.join(values)


_OPTIONS: dict[str, tuple[tuple[str, ...], Optional[str], str]] = {
    "--loss": (("-l", "--loss"), "SPEC", "Loss SPEC: NAME or NAME:key=value,... (repeatable); 'all' for every loss of the task."),
    "--target": (("-t", "--target"), "COLS", "Target column(s): a name, a comma list or a glob."),
    "--pred": (("-p", "--pred"), "COLS", "Prediction column(s); repeat to compare prediction sets (models)."),
    "--col": (("--col",), "ROLE=COLS", "Bind another role: ROLE=COLUMNS (repeatable)."),
    "--weight": (("-w", "--weight"), "COL", "Sample-weight column."),
    "--key": (("--key",), "COL", "Join DATA and DATA2 on this column instead of by position."),
    "--strict-key": (("--strict-key",), None, "With --key: a key value without a match in every file is an error (else counted and reported)."),
    "--task": (("--task",), "TASK", f"{_choices(TASKS, '|')} (inferred when omitted)."),
    "--logits": (("--logits/--no-logits",), None, "Scores are logits."),
    "--reduction": (("--reduction",), _choices(REDUCTIONS, "|"), f"{_choices(REDUCTIONS)} (one output row per input row)."),
    "--grad": (("--grad",), None, "Summarise the gradient of each loss w.r.t. the model output."),
    "--nan": (("--nan",), _choices(NAN_POLICIES, "|"), f"{_choices(NAN_POLICIES)}: what to do with rows holding NaN or ±inf."),
    "--by": (("--by",), "COL", "Slice results by this column (repeatable for a cross)."),
    "--min-rows": (("--min-rows",), "N", "Hide slices with fewer rows."),
    "--ci": (("--ci",), "LEVEL", "Bootstrap confidence level, e.g. 0.95."),
    "--bootstrap": (("--bootstrap",), "B", "Bootstrap resamples."),
    "--seed": (("--seed",), "S", "Seed of the bootstrap."),
    "--id": (("--id",), "COL", "Carry this column into --reduction none output."),
    "--format": (("-f", "--format"), "FORMAT", f"{_choices(REPORT_FORMATS)} (table on a terminal, json otherwise)."),
    "--output": (("-o", "--output"), "FILE", "Write results to FILE (atomically) instead of stdout."),
    "--input-format": (("--input-format",), "FORMAT", f"{_choices(INPUT_FORMATS)}, when the name does not say."),
    "--batch-rows": (("--batch-rows",), "N", "Rows per record batch (results do not depend on it)."),
    "--emit-state": (("--emit-state",), "FILE", "Also write each loss's sufficient statistics to FILE, for 'lossctl merge'."),
    "--row-offset": (("--row-offset",), "N", "With --emit-state: this shard's first row in the whole data (makes merged bootstrap intervals exact)."),
    "--engine": (("--engine",), _choices(ENGINES, "|"), f"{_choices(ENGINES)}: where the work runs (dask: a Parquet dataset on a Dask cluster; needs lossctl[dask])."),
    "--scheduler": (("--scheduler",), "ADDRESS", "With --engine dask: the ADDRESS of a running Dask scheduler (else a LocalCluster on 127.0.0.1 for the run)."),
    "--quiet": (("-q", "--quiet"), None, "No progress bar or notes on stderr."),
    "--config": (("--config",), "FILE", "TOML config ([data], [[check]]); else lossctl.toml or [tool.lossctl] in pyproject.toml here."),
    "--baseline": (("--baseline",), "FILE", "A file with the baseline's predictions for the same rows (same column names, or --baseline-pred)."),
    "--baseline-pred": (("--baseline-pred",), "COL", "The baseline's prediction column(s): in the --baseline file, else in DATA."),
    "--junit": (("--junit",), "FILE", "Also write a JUnit XML report to FILE."),
    "--assert": (("--assert",), "CHECK", '"SPEC OP BOUND" (repeatable): OP <, <=, >, >=; BOUND a number, baseline, baseline * K or baseline + K.'),
    "--goal": (("--goal",), "GOAL", "What the data cannot show: intervals | margin | boosting | quality | simple | small-objects | vae | distillation."),
    "--coverage": (("--coverage",), "C", "Central interval wanted, e.g. 0.9: the quantile τ pair (implies --goal intervals)."),
}
_METAVARS = {long: metavar for long, (_, metavar, _) in _OPTIONS.items() if metavar}


def _option(long: str, help: Optional[str] = None, **kwargs: Any) -> Any:
    """The option LONG as _OPTIONS declares it; ``help`` where a command says it its own way."""
    flags, _, text = _OPTIONS[long]
    return typer.Option(*flags, help=text if help is None else help, **kwargs)


# the options that read the same in every command that has them
Target = Annotated[Optional[str], _option("--target")]
TaskOpt = Annotated[Optional[str], _option("--task")]
Nan = Annotated[str, _option("--nan")]
InputFormatOpt = Annotated[Optional[str], _option("--input-format")]
Scheduler = Annotated[Optional[str], _option("--scheduler")]
Quiet = Annotated[bool, _option("--quiet")]
ReportFormat = Annotated[Optional[str], _option("--format")]

# A larger --batch-rows means "as large as possible": results do not depend on it, and
# readers size their blocks from it in int32 (16M rows is already 128 MB per float column).
MAX_BATCH_ROWS = 1 << 24
_TYPE_METAVARS = {str: "TEXT", int: "INTEGER", float: "NUMBER"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lossctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """lossctl: how predictions score under a loss, and what its gradients look like."""


# ------------------------------------------------------------------ output plumbing


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tty_columns(stream: TextIO) -> int | None:
    """The terminal's width where ``stream`` is a terminal ($COLUMNS first), else None."""
    if not _is_tty(stream):
        return None
    import shutil

    return shutil.get_terminal_size().columns


def _color(stream: TextIO) -> bool:
    return _is_tty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _output(path: Optional[str], *, stream: bool = False):
    """Write to a temporary file, then rename it onto PATH; without PATH, to stdout.

    Either everything is written, or nothing is: an error half-way leaves no
    half-written file (lossctl.output.open_output). On stdout, results are held until
    complete, or with ``stream=True`` (per-row output) written as they come, so that
    a pipe or a terminal answers at once.
    """
    from lossctl.output import open_output

    return open_output(path, stream=stream)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _guard_outputs(inputs: list[Optional[str]], **outputs: Optional[str]) -> None:
    """Refuse an output path that names an input (it would be overwritten) or another output."""
    import glob as globmod

    files: list[str] = []
    for name in inputs:
        if not name or name == "-":
            continue
        if os.path.isdir(name):
            files += [os.path.join(d, f) for d, _, fs in os.walk(name) for f in fs]
        elif any(ch in name for ch in "*?[") and not os.path.exists(name):
            files += globmod.glob(name, recursive=True)
        else:
            files.append(name)
    given = [(opt, path) for opt, path in outputs.items() if path]
    for opt, path in given:
        for f in files:
            if _same_file(path, f) and not path.startswith("/dev/"):
                raise UsageError(f"--{opt.replace('_', '-')} {path} is an input file: it would be overwritten; "
                                 "write the results elsewhere")
    for i, (opt, path) in enumerate(given):
        for opt2, path2 in given[i + 1:]:
            if path == path2 or _same_file(path, path2):
                raise UsageError(f"--{opt.replace('_', '-')} and --{opt2.replace('_', '-')} name the same file {path}")


def _default_format(fmt: Optional[str], output: Optional[str]) -> str:
    if fmt is None:
        if output:
            ext = os.path.splitext(output)[1].lower().lstrip(".")
            return {"md": "markdown", "ndjson": "jsonl"}.get(ext, ext if ext in FORMATS else "json")
        return "table" if _is_tty(sys.stdout) else "json"
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; valid formats: {', '.join(FORMATS)}")
    return fmt


def _parse_cols(cols: list[str]) -> dict[str, str]:
    out = {}
    for c in cols:
        role, sep, sel = c.partition("=")
        if not sep or not role.strip() or not sel.strip():
            raise UsageError(f"--col takes ROLE=COLUMNS, such as --col anchor='a_*'. Got '{c}' instead.")
        out[role.strip()] = sel.strip()
    return out


# ------------------------------------------------------------------ eval

Data = Annotated[str, typer.Argument(help="CSV, TSV, Parquet, Feather, JSON Lines, a Parquet directory or glob, or - for stdin.", show_default=False)]
DataPaths = Annotated[list[str], typer.Argument(
    help="CSV, TSV, Parquet, Feather, JSON Lines, a Parquet directory or glob, or - for stdin. Several paths "
         "holding the bound columns are one dataset; two paths between which they are split are targets and "
         "predictions (rows align by position or by --key).", show_default=False, metavar="DATA")]


@app.command("eval")
def eval_cmd(
    data: DataPaths,
    loss: Annotated[list[str], _option("--loss")] = [],
    target: Target = None,
    pred: Annotated[list[str], _option("--pred")] = [],
    col: Annotated[list[str], _option("--col", "Bind another role: ROLE=COLUMNS (repeatable), e.g. --col anchor='a_*'.")] = [],
    weight: Annotated[Optional[str], _option("--weight")] = None,
    key: Annotated[Optional[str], _option("--key")] = None,
    strict_key: Annotated[bool, _option("--strict-key")] = False,
    task: TaskOpt = None,
    logits: Annotated[Optional[bool], _option("--logits", "Scores are logits (sets logits=true on every loss that has it).", show_default=False)] = None,
    reduction: Annotated[str, _option("--reduction")] = _D.reduction.value,
    grad: Annotated[bool, _option("--grad")] = _D.grad,
    nan: Nan = _D.nan.value,
    by: Annotated[list[str], _option("--by")] = [],
    min_rows: Annotated[int, _option("--min-rows")] = _D.min_rows,
    ci: Annotated[Optional[float], _option("--ci")] = None,
    bootstrap: Annotated[int, _option("--bootstrap")] = _D.bootstrap,
    seed: Annotated[int, _option("--seed")] = _D.seed,
    id_col: Annotated[Optional[str], _option("--id")] = None,
    fmt: Annotated[Optional[str], _option("--format", f"{_choices(FORMATS)} (table on a terminal, json otherwise).")] = None,
    output: Annotated[Optional[str], _option("--output")] = None,
    input_format: InputFormatOpt = None,
    batch_rows: Annotated[Optional[int], _option("--batch-rows")] = None,
    emit_state: Annotated[Optional[str], _option("--emit-state")] = None,
    row_offset: Annotated[int, _option("--row-offset")] = _D.row_offset,
    engine: Annotated[str, _option("--engine")] = _D.engine.value,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> None:
    """Compute losses (and with --grad their gradient summaries) for one or more prediction sets."""
    from lossctl.plan import Request
    from lossctl.driver import accumulate
    from lossctl.assemble import build_report
    from lossctl.rowwise import iter_rows
    from lossctl.planner import prepare

    form = _default_format(fmt, output)
    EvalOptions.validated(CLI, task=task, logits=logits, reduction=reduction, grad=grad, nan=nan, min_rows=min_rows,
                          ci=ci, bootstrap=bootstrap, seed=seed, input_format=input_format, batch_rows=batch_rows,
                          row_offset=row_offset, engine=engine)
    if batch_rows is not None:
        batch_rows = min(batch_rows, MAX_BATCH_ROWS)  # results do not depend on it; readers take int32/int64
    req = Request(
        data=data[0], data2=data[1] if len(data) > 1 else None, more=data[2:], key=key, strict_key=strict_key, target=target, preds=list(pred), cols=_parse_cols(col), weight=weight,
        task=task, losses=list(loss), logits=logits, reduction=reduction, grad=grad, nan=nan, by=list(by),
        min_rows=min_rows, ci=ci, bootstrap=bootstrap, seed=seed, input_format=input_format,
        batch_rows=batch_rows, id=id_col,
    )
    if reduction == "none" and form not in ("csv", "tsv", "jsonl"):
        raise UsageError("--reduction none writes one row per input row: use -f csv, tsv or jsonl")
    if reduction == "none" and (by or ci is not None):
        raise UsageError(f"--reduction none writes one row per input row; {'--by' if by else '--ci'} summarises "
                         "rows: use one or the other")
    if emit_state and reduction == "none":
        raise UsageError("--emit-state needs reduced results, not --reduction none")
    _guard_outputs(list(data), output=output, emit_state=emit_state)
    dask_engine = _engine(engine, scheduler, req)
    if dask_engine is not None and emit_state:
        raise UsageError("--emit-state writes one shard's states; --engine dask merges every file's itself")
    plan, inputs = prepare(req)
    try:
        if reduction == "none":
            from lossctl.render import write_rows
            from lossctl.rowwise import rowwise_notes

            with _output(output, stream=True) as out:  # a pipe or a terminal gets each batch as it is done
                write_rows(iter_rows(plan, inputs), form, out)
            _notes([*plan.notes, *rowwise_notes(plan)], quiet)
            return
        # gradient top-1% candidates to spare for the merge; only the table draws the histogram
        plan = plan.with_context(top_keep=2 if emit_state else plan.ctx.top_keep,
                                 sample_grads=form == "table" or bool(emit_state))
        from lossctl import progress as prog

        bar = None
        if prog.wanted(quiet) and dask_engine is None:
            src = inputs[0]
            bar = prog.Progress(src.num_rows, src.size_bytes, os.path.basename(src.name) or src.name)
        try:
            # pictures on a terminal, with NO_COLOR too (their shapes carry them without colour)
            want_sample = form == "table" and _is_tty(sys.stdout) and not output
            if dask_engine is not None:
                acc = dask_engine.accumulate(plan, inputs)
            elif emit_state:  # a shard: its losses must merge (refused before reading)
                from lossctl.driver import run_shard

                acc = run_shard(plan, inputs, row_offset, progress=bar, sample=want_sample)
            else:
                acc = accumulate(plan, inputs, row_offset, bar, sample=want_sample)
        finally:
            if bar is not None:
                bar.close()
        state = None
        if emit_state:
            from lossctl import statefile

            state = statefile.encode(statefile.dump(plan, acc, row_offset))
        report = build_report(plan, acc)
    finally:
        inputs.close()
    _show(report, form, output, quiet, state=(emit_state, state) if emit_state else None)


def _engine(engine: str, scheduler: Optional[str], req=None):
    """The Dask engine for --engine dask (having refused what ``req`` asks and it does not take), else None."""
    engine = EvalOptions.validated(CLI, engine=engine).engine
    if scheduler is not None and engine is not Engine.DASK:
        raise UsageError("--scheduler names a Dask scheduler: it needs --engine dask")
    if engine is Engine.LOCAL:
        return None
    from lossctl.engines import dask as dask_engine

    out = dask_engine.Engine(scheduler)
    if req is not None:
        out.check_request(req)
    return out


def _show(report, form: str, output: Optional[str], quiet: bool, state: Optional[tuple[str, str]] = None) -> None:
    """Render the report to OUTPUT (or stdout), and the state text to its file: both, or neither."""
    from lossctl.output import open_outputs
    from lossctl.render import render_report

    targets = [(output, False)] + ([(state[0], False)] if state else [])
    with open_outputs(*targets) as files:
        render_report(report, form, files[0], color=_color(sys.stdout) and not output)
        if state:
            files[1].write(state[1])
    # warnings and notes go to stderr in every format (CLI.md), each once
    results = report.all_results()
    hidden = getattr(report, "hidden_groups", 0)
    hid = [f"{hidden} slice{'s' if hidden != 1 else ''} with fewer than --min-rows rows hidden"] \
        if hidden and form != "table" else []  # the table says so itself
    _notes([*report.warnings, *(n for r in results for n in r.notes), *hid], quiet)


def _notes(notes, quiet: bool) -> None:  # type: ignore[no-untyped-def]
    if not quiet:
        for n in dict.fromkeys(notes):
            _err(f"lossctl: note: {n}")


@app.command("merge")
def merge_cmd(
    states: Annotated[list[str], typer.Argument(help="State files written by 'lossctl eval --emit-state'.", show_default=False)],
    fmt: Annotated[Optional[str], _option("--format", f"{_choices(FORMATS)}.")] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Write results to FILE (atomically).")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No notes on stderr.")] = False,
) -> None:
    """Combine shard state files into exactly the result of one run over all shards."""
    from lossctl import statefile
    from lossctl.assemble import build_report

    form = _default_format(fmt, output)
    _guard_outputs(list(states), output=output)
    plan, acc = statefile.merge(list(states))
    _show(build_report(plan, acc), form, output, quiet)


# ------------------------------------------------------------------ check (the CI gate)


@app.command("check")
def check_cmd(
    data: Annotated[Optional[str], typer.Argument(help="The data, as for eval (else path in the config's [data] table).", show_default=False)] = None,
    data2: Annotated[Optional[str], typer.Argument(help="A second file holding the candidate's predictions, as for eval.", show_default=False)] = None,
    assertion: Annotated[list[str], _option("--assert")] = [],
    baseline: Annotated[Optional[str], _option("--baseline")] = None,
    baseline_pred: Annotated[Optional[str], _option("--baseline-pred")] = None,
    config: Annotated[Optional[str], _option("--config")] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict/--no-strict", help="An inconclusive check (its interval straddles the bound) fails.", show_default=False)] = None,
    junit: Annotated[Optional[str], _option("--junit")] = None,
    target: Target = None,
    pred: Annotated[list[str], _option("--pred", "The candidate's prediction column(s).")] = [],
    col: Annotated[list[str], _option("--col")] = [],
    weight: Annotated[Optional[str], _option("--weight")] = None,
    key: Annotated[Optional[str], _option("--key", "Align DATA2 and the baseline file with DATA on this column instead of by position.")] = None,
    strict_key: Annotated[Optional[bool], _option("--strict-key", show_default=False)] = None,
    task: TaskOpt = None,
    logits: Annotated[Optional[bool], _option("--logits", show_default=False)] = None,
    # None: not given, so that the config's value (else the default) holds
    nan: Annotated[Optional[str], _option("--nan", show_default=False)] = None,
    by: Annotated[list[str], _option("--by", "Check every slice of this column too (repeatable for a cross).")] = [],
    min_rows: Annotated[Optional[int], _option("--min-rows", f"Slices with fewer rows are listed as too small to judge [default: {_D.min_rows}].", show_default=False)] = None,
    ci: Annotated[Optional[float], _option("--ci", "Judge on bootstrap intervals at this level, e.g. 0.95.")] = None,
    bootstrap: Annotated[Optional[int], _option("--bootstrap", f"Bootstrap resamples [default: {_D.bootstrap}].", show_default=False)] = None,
    seed: Annotated[Optional[int], _option("--seed", f"Seed of the bootstrap [default: {_D.seed}].", show_default=False)] = None,
    fmt: ReportFormat = None,
    output: Annotated[Optional[str], _option("--output", "Write the report to FILE (atomically) instead of stdout.")] = None,
    input_format: InputFormatOpt = None,
    batch_rows: Annotated[Optional[int], _option("--batch-rows", "Rows per record batch (verdicts do not depend on it).")] = None,
    engine: Annotated[str, _option("--engine", f"{_choices(ENGINES)}: where the work runs (dask: a Parquet dataset on a Dask cluster, the baseline as a column of it; needs lossctl[dask]).")] = _D.engine.value,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> int:
    """CI gate: evaluate, compare with thresholds and/or a baseline; exit 1 when a check fails."""
    import time

    from lossctl import check as gate_mod
    from lossctl import check_report

    started = time.perf_counter()
    form = _default_format(fmt, output)
    if form not in check_report.FORMATS:
        raise UsageError(f"check writes {', '.join(check_report.FORMATS)}, not {form}")
    given = dict(task=task, logits=logits, nan=nan, min_rows=min_rows, ci=ci, bootstrap=bootstrap, seed=seed,
                 input_format=input_format, batch_rows=batch_rows, engine=engine)
    EvalOptions.validated(CLI, **{k: v for k, v in given.items() if v is not None})  # the config's are checked as read
    if len(pred) > 1:
        raise UsageError("check judges one candidate: give one -p (the baseline comes from --baseline or --baseline-pred)")
    flags = dict(data=data, data2=data2, target=target, pred=pred[0] if pred else None, cols=_parse_cols(col) or None,
                 weight=weight, key=key, strict_key=strict_key or None, task=task, logits=logits, nan=nan, baseline=baseline,
                 baseline_pred=baseline_pred, by=list(by) or None, min_rows=min_rows, ci=ci, bootstrap=bootstrap,
                 seed=seed, strict=strict, input_format=input_format, batch_rows=batch_rows)
    settings = gate_mod.settings(gate_mod.find_config(config), flags, list(assertion))
    _guard_outputs([settings.data, settings.data2, settings.baseline], output=output, junit=junit)
    dask_engine = _engine(engine, scheduler)

    def bar(inputs):
        from lossctl import progress as prog

        if not prog.wanted(quiet):
            return None
        src = inputs[0]
        return prog.Progress(src.num_rows, src.size_bytes, os.path.basename(src.name) or src.name)

    report = gate_mod.run(settings, bar, engine=dask_engine) if dask_engine is not None else gate_mod.run(settings, bar)
    report.elapsed = time.perf_counter() - started
    if junit:  # files first: an unwritable one is exit 2 with nothing on stdout
        with _output(junit) as f:
            f.write(check_report.junit(report).decode("utf-8"))
    summary = os.environ.get("GITHUB_STEP_SUMMARY") if os.environ.get("GITHUB_ACTIONS") == "true" else None
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(check_report.step_summary(report))
        except OSError as e:
            raise UsageError(f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {e.strerror or e}") from None
    try:
        with _output(output) as out:
            check_report.render(report, form, out, color=_color(sys.stdout) and not output)
            out.flush()
    except BrokenPipeError:  # the reader went away (| head): the verdict still sets the exit code
        _quiet_pipe()
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in check_report.annotations(report):
            print(line, file=sys.stderr)
    if not quiet:
        for n in report.warnings:
            print(f"lossctl: note: {n}", file=sys.stderr)
        if form != "table" or output:  # the verdict in one line where stdout is for machines
            print(f"lossctl: {check_report.summary_line(report)}", file=sys.stderr)
    return int(ExitStatus.OK if report.passed else ExitStatus.CHECK_FAILED)


# ------------------------------------------------------------------ recommend


@app.command("recommend")
def recommend_cmd(
    data: Data,
    data2: Annotated[Optional[str], typer.Argument(help="A second file holding the predictions; rows align by position or by --key.", show_default=False)] = None,
    target: Target = None,
    pred: Annotated[list[str], _option("--pred", "Prediction column(s), one set; optional: without them the target's distribution is judged.")] = [],
    col: Annotated[list[str], _option("--col", "Bind another role: ROLE=COLUMNS (repeatable), e.g. --col embedding='e_*'.")] = [],
    weight: Annotated[Optional[str], _option("--weight", "Sample-weight column (used by the empirical check).")] = None,
    key: Annotated[Optional[str], _option("--key")] = None,
    task: TaskOpt = None,
    goal: Annotated[Optional[str], _option("--goal")] = None,
    coverage: Annotated[Optional[float], _option("--coverage")] = None,
    logits: Annotated[Optional[bool], _option("--logits", show_default=False)] = None,
    nan: Nan = _D.nan.value,
    id_col: Annotated[Optional[str], _option("--id", "Image id column (segmentation): foreground share per image.")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Evaluate each recommended loss on the data (a second pass).")] = True,
    fmt: ReportFormat = None,
    output: Annotated[Optional[str], _option("--output", "Write the advice to FILE (atomically) instead of stdout.")] = None,
    input_format: InputFormatOpt = None,
    batch_rows: Annotated[Optional[int], _option("--batch-rows", "Rows per record batch (the advice does not depend on it).")] = None,
    engine: Annotated[str, _option("--engine", f"{Engine.LOCAL} | {Engine.DASK}: where the evidence and the check are computed (dask: a Parquet dataset on a Dask cluster; needs lossctl[dask]).")] = _D.engine.value,
    scheduler: Annotated[Optional[str], _option("--scheduler", "With --engine dask: a Dask scheduler's ADDRESS.")] = None,
    quiet: Annotated[bool, _option("--quiet", "No notes on stderr.")] = False,
) -> None:
    """Measure the evidence the selection guides turn on; rank the losses that fit, with reasons."""
    from lossctl.plan import Request
    from lossctl.advice.render import FORMATS as REC_FORMATS
    from lossctl.advice.render import render as render_advice
    from lossctl.advice.sources import run_request

    dask_engine = _engine(engine, scheduler)
    form = _default_format(fmt, output)
    if form not in REC_FORMATS:
        raise UsageError(f"recommend writes {', '.join(REC_FORMATS)}, not {form}")
    EvalOptions.validated(CLI, task=task, logits=logits, nan=nan, input_format=input_format, batch_rows=batch_rows,
                          engine=engine)
    if len(pred) > 1:
        raise UsageError("recommend judges one prediction set: give -p once (compare models with 'lossctl eval')")
    cols = _parse_cols(col)
    if id_col is not None:
        cols.setdefault("group", id_col)
    _guard_outputs([data, data2], output=output)
    req = Request(data=data, data2=data2, key=key, target=target, preds=list(pred), cols=cols,
                  weight=weight, task=task, logits=logits, nan=nan, input_format=input_format, batch_rows=batch_rows)
    if dask_engine is None:
        advice = run_request(req, goal=goal, coverage=coverage, check=check)
    else:
        with dask_engine.session():
            advice = run_request(req, goal=goal, coverage=coverage, check=check, engine=dask_engine)
    cols = _tty_columns(sys.stdout) if output is None else None
    width = 80 if cols is None else max(40, min(80, cols))  # (a file or a pipe: 80, the same bytes anywhere)
    with _output(output) as out:
        render_advice(advice, form, out, width=width)
    if not quiet:
        for n in advice.notes:
            print(f"lossctl: note: {n}", file=sys.stderr)


# ------------------------------------------------------------------ list / explain


@app.command("list")
def list_cmd(
    task: Annotated[Optional[str], typer.Option("--task", help="Only the losses of this task.")] = None,
    fmt: Annotated[Optional[str], _option("--format", f"{_choices(REPORT_FORMATS)}.")] = None,
) -> None:
    """The catalogue: every loss with its task, roles, parameters and properties."""
    from lossctl import catalog

    EvalOptions.validated(CLI, task=task)
    form = _default_format(fmt, None)
    if form not in REPORT_FORMATS:
        raise UsageError(f"list writes table, json or markdown, not {form}")
    with _output(None) as out:
        catalog.render_list(task, form, out, color=_color(sys.stdout))


@app.command("explain")
def explain_cmd(
    loss: Annotated[str, typer.Argument(help="A loss name or alias.", show_default=False)],
    fmt: Annotated[Optional[str], typer.Option("-f", "--format", help="table (text) | json | markdown.")] = None,
) -> None:
    """One loss in full: formula, gradient, properties, when to use it, conventions, an example."""
    from lossctl import catalog

    form = _default_format(fmt or "table", None)  # text, even in a pipe: it is for reading
    if form not in REPORT_FORMATS:
        raise UsageError(f"explain writes text (table), json or markdown, not {form}")
    cols = _tty_columns(sys.stdout) if form == "table" else None
    width = None if cols is None else max(20, cols)
    with _output(None) as out:
        catalog.render_explain(loss, form, out, color=_color(sys.stdout), width=width)


# ------------------------------------------------------------------ entry point


def _light_coercion() -> None:
    """Coerce lossctl's plain parameters without Typer's pydantic layer.

    Typer ≥ 0.20 builds a pydantic TypeAdapter for every parameter of the command it
    runs: about 0.1 s of imports on every call, more than lossctl's own start-up.
    lossctl's parameters are str, int, float, bool and lists of str; those are coerced
    here directly, with Typer's own error type. Any other annotation, or a Typer
    without this hook, keeps Typer's path.
    """
    import dataclasses
    import typing

    try:
        import typer.core as tcore
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam
    except ImportError:  # another Typer: nothing to do
        return
    original = getattr(tcore, "build_runtime_param", None)
    if original is None or getattr(original, "_lossctl", False):
        return

    def plain(annotation: typing.Any) -> tuple[type | None, bool]:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
        if origin is list and len(args) == 1 and args[0] in (str, int, float):
            return args[0], True
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
            annotation = args[0]
        return (annotation, False) if annotation in (str, int, float, bool) else (None, False)

    @dataclasses.dataclass(frozen=True)
    class Plain(RuntimeParam):
        kind: type = str
        many: bool = False

        def _coerce_value(self, value: typing.Any, param: typing.Any, ctx: typing.Any) -> typing.Any:
            if self.many:
                return [self._one(v, param, ctx) for v in value]
            return self._one(value, param, ctx)

        def _one(self, v: typing.Any, param: typing.Any, ctx: typing.Any) -> typing.Any:
            if isinstance(v, self.kind) and not (self.kind is not bool and isinstance(v, bool)):
                return v
            if self.kind is bool:
                text = str(v).strip().lower()
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off"):
                    return False
            else:
                try:
                    return self.kind(v)
                except (TypeError, ValueError):
                    pass
            raise BadParameter(f"{v!r} is not a valid {self.kind.__name__}.", ctx=ctx, param=param)

    def build(descriptor: typing.Any) -> typing.Any:
        kind, many = plain(descriptor.annotation)
        if kind is None or getattr(descriptor, "file_annotation", None) is not None:
            return original(descriptor)
        return Plain(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, kind=kind, many=many)

    build._lossctl = True  # type: ignore[attr-defined]
    tcore.build_runtime_param = build


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every failure to an exit code and one line on stderr.

    Every command goes through here and through ``_Group``: a closed pipe exits 0
    quietly, Ctrl-C exits 130 with one line, a failure to write results is exit 2
    with one line, a bug is exit 3 (its traceback only with --debug).
    """
    click = _click_exceptions()

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LOSSCTL_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    saved = _guard_std_streams()
    try:
        try:
            _light_coercion()
            command = typer.main.get_command(app)
            _document(command)
            if args and args[0] in ("eval", "merge", "check", "recommend"):
                from lossctl.runtime import tune_malloc

                tune_malloc()
            with _warnings_as_notes(debug, quiet="-q" in args or "--quiet" in args):
                rv = command.main(args=args, prog_name="lossctl", standalone_mode=False)
            code = int(rv) if isinstance(rv, int) else 0
        except (_PipeClosed, BrokenPipeError):
            _quiet_pipe()
            code = 0
        except (_Interrupted, KeyboardInterrupt):
            _err("lossctl: interrupted")
            code = 130
        except LossctlError as e:
            if getattr(e, "stdout", False):  # the results cannot reach stdout: drop what is buffered
                _quiet_pipe()
            if debug:
                raise
            _err(f"lossctl: error: {e}")
            code = int(e.exit_status)
        except click.ClickException as e:
            if type(e).__name__.startswith("NoArgsIsHelp"):
                with contextlib.suppress(BrokenPipeError):
                    print(e.format_message(), file=sys.stdout or sys.stderr)
                return 0
            if debug:
                raise
            msg = e.format_message()
            hint = ""
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _err(f"lossctl: error: {msg}{hint}")
            code = int(ExitStatus.INPUT_ERROR)
        except MemoryError:
            if debug:
                raise
            _err("lossctl: error: out of memory (try a smaller --batch-rows or --bootstrap)")
            code = int(ExitStatus.INTERNAL_ERROR)
        except Exception as e:  # noqa: BLE001 - the one place that turns bugs into exit 3
            if debug:
                raise
            _err(f"lossctl {__version__}: internal error: {type(e).__name__}: {e}. This is a bug: {REPORT}")
            code = int(ExitStatus.INTERNAL_ERROR)
        _flush_stdout()
        return code
    finally:
        _restore_std_streams(saved)


def _document(command) -> None:  # type: ignore[no-untyped-def]
    """--debug in every command's help (main() reads it wherever it stands); plain metavars."""
    for cmd in [command, *getattr(command, "commands", {}).values()]:
        if not any("--debug" in getattr(p, "opts", ()) for p in cmd.params):
            cmd.params.append(_debug_option())
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "argument":
                p.metavar = p.metavar or p.name.upper()
                p.display_type_rich = lambda ctx: None  # the help says what DATA is; "<str>" says nothing
                continue
            if getattr(p, "metavar", None) is not None or getattr(p, "is_flag", False) or getattr(p, "count", False):
                continue
            long = next((o for o in p.opts if o.startswith("--")), None)
            annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            kind = _plain_type(annotation)
            p.metavar = _METAVARS.get(long) or _TYPE_METAVARS.get(kind) or "VALUE"


def _debug_option():  # type: ignore[no-untyped-def]
    """A --debug option as Typer builds one (for help only: main() takes --debug out of the arguments)."""
    holder = typer.Typer()

    @holder.command()
    def _holder(debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False) -> None:
        pass  # pragma: no cover

    param = next(p for p in typer.main.get_command(holder).params if "--debug" in p.opts)
    param.expose_value = False
    return param


def _plain_type(annotation):  # type: ignore[no-untyped-def]
    import typing

    for _ in range(3):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = args[0]
        elif args and len(args) == 1:
            annotation = args[0]
        else:
            break
    return annotation


def _guard_std_streams() -> tuple:
    """Closed standard streams: keep their descriptors from being reused, report rather than misroute.

    Started with stderr closed (``2>&-``), Python's print(file=sys.stderr) would write
    to stdout: messages go to /dev/null instead. Started with stdout closed (``>&-``),
    results are an error (exit 2, lossctl.output.stdout_writer), and descriptor 1 is held
    by /dev/null so that no file lossctl opens can take its place.
    """
    saved = (sys.stdout, sys.stderr)
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_WRONLY)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
    return saved


def _restore_std_streams(saved: tuple) -> None:
    out, err = saved
    if err is None and sys.stderr is not None:
        with contextlib.suppress(OSError):
            sys.stderr.close()
    sys.stdout, sys.stderr = out, err


def _flush_stdout() -> None:
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError:  # a closed pipe, a full device: nothing more can reach it
        _quiet_pipe()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()


def _click_exceptions():
    """Click's exception classes: Typer ≥ 0.20 vendors Click as typer._click."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older Typer uses click itself
        from click import exceptions
    return exceptions


@contextlib.contextmanager
def _warnings_as_notes(debug: bool, quiet: bool):
    """No Python warning reaches stderr raw (CLI.md): each one that escaped the arithmetic's own
    np.errstate becomes one lossctl note after a successful run (shown raw only with --debug)."""
    import warnings

    with warnings.catch_warnings(record=not debug) as caught:
        if not debug:
            warnings.simplefilter("always")  # recorded, never printed nor raised (also under python -W error)
        yield
    if caught and not quiet:
        for text in dict.fromkeys(str(w.message).split("\n")[0] for w in caught):
            _err(f"lossctl: note: numpy reported '{text}': a figure it touched may be inf or nan")


def _click_core():
    try:
        from typer._click import core
    except ImportError:  # pragma: no cover - older Typer uses click itself
        from click import core
    return core


def _err(msg: str) -> None:
    line = " ".join(str(msg).split())
    if sys.stderr is None:  # never print(file=None): that is stdout
        return
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _quiet_pipe() -> None:
    # the reader went away (or the device is full): point stdout at /dev/null so that
    # the interpreter's exit flush is silent, as Python's documentation of SIGPIPE advises
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run() -> None:
    sys.exit(main())
