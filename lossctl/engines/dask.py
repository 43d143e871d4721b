"""``--engine dask``: a Parquet dataset evaluated by the workers of a Dask cluster.

The client plans once (the planner's ``prepare``: columns, task, losses; the Parquet
footers: row counts, hence each fragment's first row in the whole data), then sends one
task per worker: a contiguous run of files or row groups of about equal rows (a multiple
of the workers for large data, :data:`ROWS_PER_TASK`). Each task opens its fragment with
lossctl's own Arrow reader (no DataFrame layer), runs the shard driver
(:func:`lossctl.driver.run_shard`) with the fragment's global row offset, and returns its
states as plain data (:func:`lossctl.statefile.payload`: no classes, no scratch buffers).
The payloads are added pairwise on the workers, in dataset order; only states cross the network, and the client turns the last one into
the report exactly as the local engine would.

``dask`` and ``distributed`` are imported here only, inside the functions that need them.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import math
import os
import uuid
from typing import Any, Iterator

from lossctl.errors import InputError, LossctlError, UsageError

CONNECT_TIMEOUT = 10.0  # seconds to reach a --scheduler (distributed's own default is 30)
INSTALL = "pip install 'lossctl[dask]'"


def require() -> None:
    """The extra is installed, or one line saying how to install it."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine dask needs Dask, which is not installed: {INSTALL}") from None


# ------------------------------------------------------------------ what the engine takes


def check_request(req: Any) -> None:
    """Refuse, before any file is read, what this engine does not take."""
    paths = [req.data] + ([req.data2] if req.data2 else []) + list(req.more)
    if "-" in paths or req.baseline == "-":
        raise UsageError("--engine dask reads Parquet files that every worker can open, not standard input")
    if req.reduction == "none":
        raise UsageError("--engine dask gives reduced results: --reduction none needs --engine local")
    if req.key:
        raise UsageError("--engine dask evaluates one dataset: --key joins two files, which needs --engine local")
    if req.baseline:
        raise UsageError("--engine dask takes the baseline as a prediction column of the same dataset "
                         "(--baseline-pred COL without --baseline FILE)")
    if req.nan == "drop" and req.ci is not None:
        raise UsageError("--engine dask does not take --nan drop with --ci yet: bootstrap rows are numbered after "
                         "the rows dropped before them, unknown until earlier files are read; use --engine local")
    require()


def check_plan(plan: Any, inputs: Any, states: bool = True) -> None:
    """Refuse, before any task runs, a plan the engine would evaluate differently (``states``:
    the jobs' states are computed, so each must merge across files)."""
    from lossctl import io
    from lossctl.driver import unmergeable
    from lossctl.align import needed_columns

    if len(inputs) != 1:
        raise UsageError("--engine dask evaluates one dataset: a second data file (targets and predictions in two "
                         "files) needs --engine local")
    src = inputs[0]
    if src.fmt not in ("parquet", "dataset"):
        raise UsageError(f"--engine dask reads Parquet (a file, a directory or a glob of files); {src.name} is "
                         f"{src.fmt}: use --engine local")
    found = unmergeable(plan) if states else None
    if found is not None:
        loss, reason = found
        reason = reason.split(": ", 1)[1] if reason.startswith("--emit-state") else reason
        reason = reason.removeprefix(f"{loss}: ")
        raise UsageError(f"--engine dask cannot evaluate {loss}: its state does not merge across files "
                         f"({reason}); use --engine local")
    if src.fmt == "dataset":
        io._check_dataset_columns(src, [c for (_, c) in needed_columns(plan)])


# ------------------------------------------------------------------ fragments


ROWS_PER_TASK = 10_000_000  # rows a task reads, at most, unless there are more rows than workers × this


@dataclasses.dataclass
class Fragment:
    """Rows a task reads: a run of files, or of one file's row groups, and where they start in the data."""

    index: int
    name: str  # its first file, as messages name it
    src: Any  # the Source the task reads (a copy of the client's, narrowed to this fragment)
    row_offset: int
    rows: int
    files: list[tuple[str, str, tuple[int, int | None]]]  # each file read: name, path, (size, mtime_ns) when planned


def fragments(plan: Any, inputs: Any, workers: int, rows_per_task: int | None = None) -> list[Fragment]:
    """The data cut at row-group boundaries into contiguous runs of about equal rows: one per worker
    (or a multiple of the workers, runs of at most ``rows_per_task`` rows), fewer where there are
    fewer row groups. A task's fixed costs (its states, its top-1% candidates kept for the whole
    data, their merge) are paid once per run rather than once per file."""
    from lossctl import io

    rows_per_task = max(1, rows_per_task or ROWS_PER_TASK)
    src = inputs[0]
    files = list(zip(src.parts, src.part_keys)) if src.fmt == "dataset" else [(src, None)]
    groups = []
    for part, _ in files:
        md = io.parquet_file(part.path).metadata
        groups.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
    total = sum(sum(g) for g in groups)
    pieces = [(f, i, n) for f, sizes in enumerate(groups) for i, n in enumerate(sizes) if n]
    if not pieces:
        return []
    workers = max(1, workers)
    n_tasks = min(len(pieces), workers * max(1, math.ceil(total / (workers * rows_per_task))))
    # cut k at the row-group boundary nearest k/n_tasks of the rows, each run at least one row group
    ends = list(itertools.accumulate(n for _, _, n in pieces))  # rows up to and including piece j
    cuts = [0]
    for k in range(1, n_tasks):
        goal = k * total / n_tasks
        j = bisect.bisect_left(ends, goal)  # ends[j] ≥ goal: cut after piece j, or before it
        j = j + 1 if j < len(ends) and (j == 0 or ends[j] - goal < goal - ends[j - 1]) else j
        cuts.append(min(max(j, cuts[-1] + 1), len(pieces) - (n_tasks - k)))
    cuts.append(len(pieces))
    runs = [pieces[a:b] for a, b in zip(cuts, cuts[1:])]
    out: list[Fragment] = []
    offset = 0
    for run in runs:
        by_file: dict[int, list[int]] = {}  # file → [first row group, end, rows]
        for f, i, n in run:
            r = by_file.setdefault(f, [i, i, 0])
            r[1], r[2] = i + 1, r[2] + n
        parts, keys, names = [], [], []
        for f, (a, b, n) in by_file.items():
            part, key = files[f]
            rg = None if (a, b) == (0, len(groups[f])) else (a, b)
            parts.append(dataclasses.replace(part, row_groups=rg, num_rows=n, rows_bound=n, first_row=sum(groups[f][:a])))
            keys.append(key)
            names.append(part.name)
        rows = sum(n for _, _, n in run)
        if src.fmt == "dataset":
            fsrc = dataclasses.replace(src, path=names, parts=parts, part_keys=keys, num_rows=rows, rows_bound=rows,
                                       conflicts={}, lacking={}, first_row=offset)
        else:
            fsrc = parts[0]
        stats = [(name, files[f][0].path, io.file_stat(files[f][0].path)) for f, name in zip(by_file, names)]
        out.append(Fragment(len(out), names[0], fsrc, offset, rows, stats))
        offset += rows
    return out


# ------------------------------------------------------------------ what runs on a worker


_WARM = False


def _warm() -> None:
    """What every task needs, once per worker process: lossctl's reader, driver and losses imported,
    and the CLI's malloc settings (whatever the worker was started with: distributed's nanny sets
    MALLOC_TRIM_THRESHOLD_, which makes lossctl's batches slower)."""
    global _WARM
    if _WARM:
        return
    import pyarrow.parquet  # noqa: F401

    from lossctl import driver, io, plan, registry, slices, statefile  # noqa: F401
    from lossctl.runtime import tune_malloc

    registry.all_losses()
    tune_malloc()
    code_fingerprint()
    _WARM = True


def dask_setup(worker: Any = None) -> None:
    """``dask worker ADDRESS --preload lossctl.engines.dask``: each worker warms up when it starts
    (imports, malloc settings), so that the first run on a fresh cluster does not pay for it."""
    _warm()


_CODE: str | None = None


def code_fingerprint() -> str:
    """lossctl's version and a hash of its files: a worker runs a task only with the same code as
    the client that planned it (a worker left running across an upgrade would compute with the
    old code, or fail in a way that says nothing)."""
    global _CODE
    if _CODE is None:
        import hashlib

        import lossctl

        root = os.path.dirname(os.path.abspath(lossctl.__file__))
        h = hashlib.sha1()
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if f.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(d, f)
                with open(path, "rb") as fh:
                    data = fh.read()
                h.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
                h.update(len(data).to_bytes(8, "little") + data)
        _CODE = f"{lossctl.__version__}+{h.hexdigest()[:16]}"
    return _CODE


def _other_code(worker: str, code: str, client: str, whose: str) -> str:
    """The message for a worker running lossctl ``code`` where the client runs ``client``."""
    v_worker, v_client = code.split("+")[0], client.split("+")[0]
    what = (f"lossctl {v_worker} where {whose} runs {v_client}" if v_worker != v_client
            else f"lossctl {v_worker} with other files than {whose}'s")
    return (f"--engine dask: {worker} runs {what}: start every worker with {whose}'s lossctl "
            "(restart the workers after an upgrade)")


def _checked(fn: Any, code: str, *args: Any) -> Any:
    """``fn(*args)`` on a worker whose lossctl is the client's (``code``)."""
    mine = code_fingerprint()
    if code != mine:
        import socket

        raise UsageError(_other_code(f"a worker on {socket.gethostname()}", mine, code, "the client"))
    return fn(*args)


def _worker_codes(client: Any) -> dict[str, str]:
    """Each worker's lossctl (version and files), asked by a function shipped by value, which a
    worker with any lossctl can run (or the exception it raises, as text)."""
    def probe() -> str:
        try:
            from lossctl.engines import dask as mod

            return mod.code_fingerprint()
        except Exception as e:  # (a lossctl too old to have it: its version at least)
            try:
                import lossctl

                return f"{lossctl.__version__}+?"
            except Exception:
                return f"none+{type(e).__name__}"

    try:
        return client.run(probe)
    except Exception:  # (the cluster is gone: the original error says more)
        return {}


def _diagnosed(client: Any, e: BaseException) -> BaseException:
    """``e``, or where a worker's lossctl is not the client's, a usage error that says so."""
    if isinstance(e, LossctlError):
        return e
    mine = code_fingerprint()
    odd = {w: c for w, c in _worker_codes(client).items() if c != mine}
    if not odd:
        return e
    worker, code = sorted(odd.items())[0]
    n = len(odd)
    more = f" (and {n - 1} other worker{'s' * (n > 2)})" if n > 1 else ""
    return UsageError(_other_code(f"worker {worker}{more}", code, mine, "this client"))


def _task(wire: dict[str, Any], frag: Fragment) -> dict[str, Any]:
    """A fragment's states: the shard driver on its rows, numbered from their place in the data."""
    from lossctl import statefile
    from lossctl.driver import run_shard
    from lossctl.plan import plan_from_wire

    _warm()
    _unchanged(frag)
    plan = plan_from_wire(wire)
    acc = run_shard(plan, [frag.src], frag.row_offset, input_offset=frag.row_offset, whole=False)
    _unchanged(frag)
    return statefile.payload(plan, acc, frag.row_offset)


def _unchanged(frag: Fragment) -> None:
    from lossctl import io

    for name, path, stat in frag.files:
        try:
            now = io.file_stat(path)
        except OSError as e:
            raise InputError.at(f"cannot read it any more ({e.strerror or e}): it changed after the run was planned",
                                source=name) from None
        if now != stat:
            raise InputError.at("the file changed after the run was planned (its size or modification time differ); "
                                "run again", source=name)


def _merge(wire: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    from lossctl import statefile
    from lossctl.plan import plan_from_wire

    plan = plan_from_wire(wire)
    return statefile.merge_payloads(plan, a, b, rows_bound=plan.ctx.rows_bound)


# ------------------------------------------------------------------ the client


@dataclasses.dataclass
class Engine:
    """The engine as a command holds it: the request's refusals, then the run's states."""

    scheduler: str | None = None
    _client: Any = dataclasses.field(default=None, repr=False)
    _stack: Any = dataclasses.field(default=None, repr=False)  # an open session's client, made when first needed

    def check_request(self, req: Any) -> None:
        check_request(req)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One client (and without --scheduler one LocalCluster) for every run inside (recommend's
        evidence and its check's evaluations), connected when the first run needs it: what is
        refused is refused before any connection."""
        if self._stack is not None:
            yield
            return
        with contextlib.ExitStack() as stack:
            self._stack = stack
            try:
                yield
            finally:
                self._stack = self._client = None

    def _session_client(self) -> Any:
        if self._stack is None:
            return None
        if self._client is None:
            require()
            self._client = self._stack.enter_context(client_for(self.scheduler))
        return self._client

    def accumulate(self, plan: Any, inputs: Any) -> Any:
        _quick_exit()
        if self._stack is None:
            return accumulate(plan, inputs, self.scheduler)
        check_plan(plan, inputs)
        return accumulate(plan, inputs, self.scheduler, client=self._session_client(), checked=True)

    def evidence(self, plan: Any, inputs: Any, spec: Any) -> tuple[Any, int, int]:
        """recommend's evidence state of the dataset, measured file by file on the workers and
        merged there: (state, rows, dropped rows)."""
        if plan.request.nan == "drop":
            raise UsageError("recommend --engine dask does not take --nan drop yet: the evidence keys rows by "
                             "their place among the rows kept, unknown until earlier files are read; use "
                             "--engine local")
        _quick_exit()
        check_plan(plan, inputs, states=False)
        with self.session():
            out = _on_fragments(plan, inputs, self._session_client(), (_evidence_task, _evidence_merge), extra=spec)
        return out["state"], out["rows"], out["dropped"]


def _quick_exit() -> None:
    """Skip the collector's passes over every object at interpreter exit (0.1–0.4 s once distributed
    is imported: its modules hold hundreds of thousands of objects): they are frozen, at exit only
    (the command's process ends there; an embedding process keeps collecting until then)."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def accumulate(plan: Any, inputs: Any, scheduler: str | None = None, client: Any = None, checked: bool = False) -> Any:
    """Every state of ``plan``, computed by a Dask cluster: what the local ``accumulate`` returns
    (on ``client`` where one is open, else on one opened for this run). What the engine
    refuses is refused before any connection (``checked``: the caller has made the checks)."""
    from lossctl import statefile
    from lossctl.driver import check_rows

    require()
    if not checked:
        check_plan(plan, inputs)
    if client is None:
        with client_for(scheduler) as client:
            result = _on_fragments(plan, inputs, client, (_task, _merge))
    else:
        result = _on_fragments(plan, inputs, client, (_task, _merge))
    acc = statefile.from_payload(plan, result)
    check_rows(plan, acc.rows, acc.dropped, acc.weight_total)
    return acc


def _on_fragments(plan: Any, inputs: Any, client: Any, fns: tuple[Any, Any], extra: Any = None) -> Any:
    """``fns``' task on every fragment of the dataset, its merge pairwise on the workers (the
    plan already checked: :func:`check_plan`)."""
    from lossctl.plan import plan_wire

    wire = plan_wire(plan)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    frags = fragments(plan, inputs, workers)
    with client.as_current():
        return _run(client, wire, frags, plan.source_names[0], fns, extra)


def _evidence_task(wire: dict[str, Any], frag: Fragment, spec: Any) -> dict[str, Any]:
    """recommend's evidence of a fragment, its rows keyed by their place in the dataset."""
    from lossctl.advice.sources import evidence_pass
    from lossctl.plan import plan_from_wire

    _warm()
    _unchanged(frag)
    state, feeder = evidence_pass(plan_from_wire(wire), [frag.src], spec, frag.row_offset, frag.row_offset)
    _unchanged(frag)
    return {"state": state, "rows": feeder.rows - frag.row_offset, "dropped": feeder.dropped}


def _evidence_merge(wire: dict[str, Any], a: dict[str, Any], b: dict[str, Any], spec: Any) -> dict[str, Any]:
    a["state"].merge(b["state"])
    return {"state": a["state"], "rows": a["rows"] + b["rows"], "dropped": a["dropped"] + b["dropped"]}


def _run(client: Any, wire: dict[str, Any], frags: list[Fragment], dataset: str, fns: tuple[Any, Any] = (_task, _merge),
         extra: Any = None) -> Any:
    from distributed import as_completed, wait

    task, merge = fns
    more = () if extra is None else (extra,)
    token = uuid.uuid4().hex[:12]
    code = code_fingerprint()
    reads = [client.submit(_checked, task, code, wire, f, *more, key=f"lossctl-read-{f.index}-{token}", pure=False)
             for f in frags]
    level, merges, depth = list(reads), [], 0
    while len(level) > 1:  # a tree of pairwise merges, in dataset order
        nxt = [client.submit(_checked, merge, code, wire, level[i], level[i + 1], *more,
                             key=f"lossctl-merge-{depth}-{i // 2}-{token}", pure=False)
               for i in range(0, len(level) - 1, 2)]
        merges += nxt
        level = nxt + level[len(level) - len(level) % 2:]
        depth += 1
    final = level[0]
    failed = None
    for fut in as_completed(reads):
        if fut.status == "error":
            failed = reads.index(fut)
            break
    if failed is None:
        try:
            return final.result()
        except LossctlError:
            raise
        except Exception as e:
            d = _diagnosed(client, e)
            if d is not e:
                raise d from None
            if isinstance(e, (TypeError, ValueError, AssertionError)):
                raise InputError.at(f"the files' states do not merge: {e}", source=dataset) from None
            raise
    # the earliest failing fragment in dataset order, once every one before it has finished
    client.cancel(merges + reads[failed + 1:])
    wait(reads[:failed])
    failed = next((i for i in range(failed) if reads[i].status == "error"), failed)
    client.cancel(reads[failed + 1:])
    e = reads[failed].exception()
    d = _diagnosed(client, e)  # (a worker with other code first: it may well be what killed a worker)
    raise d if d is not e else _explain(e, frags[failed])


def _explain(e: BaseException, frag: Fragment) -> BaseException:
    from distributed.scheduler import KilledWorker

    if isinstance(e, LossctlError):
        return e
    if isinstance(e, KilledWorker):
        more = len(frag.files) - 1
        last = frag.files[-1][0]
        which = ("this file" if not more else f"this file or {last}" if more == 1
                 else f"this file or the {more} after it, up to {last}")
        return InputError.at(f"a Dask worker died while evaluating {which} (out of memory, or killed)",
                             source=frag.name)
    return e


@contextlib.contextmanager
def client_for(scheduler: str | None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a LocalCluster on 127.0.0.1 for this run."""
    import logging
    import shutil
    import tempfile

    import dask
    from distributed import Client, LocalCluster

    quiet = {"distributed.admin.tick.limit": "1h"}
    with dask.config.set(quiet), _quiet_logs():
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT}s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as e:
                raise UsageError(f"--scheduler {scheduler}: no Dask scheduler answered within "
                                 f"{CONNECT_TIMEOUT:g} s ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                                 ) from None
            try:
                yield client
            finally:
                client.close()
            return
        tmp = tempfile.mkdtemp(prefix="lossctl-dask-")
        cluster = None
        try:
            # distributed sets MALLOC_TRIM_THRESHOLD_ for its workers, which slows lossctl's batches down
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                  "temporary-directory": tmp}):
                # no dashboard; the scheduler's HTTP routes on a free loopback port (by default 8787,
                # or with a warning another one, when that is taken)
                cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None, worker_dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                       local_directory=tmp, silence_logs=logging.CRITICAL)
            client = Client(cluster, set_as_default=False)
            try:
                yield client
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """distributed's log lines and warnings (connection retries, ports taken, worker shutdowns)
    are not lossctl's output."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(distributed|tornado)(\.|$)")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)
