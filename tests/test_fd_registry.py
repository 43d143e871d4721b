"""A finite-difference check of every loss's gradient (issue 10, item 7).

Parametrised over the whole registry: every spec, every task it takes, its default
parameters, and the non-default values where the gradient changes form (each flipped
bool such as ``logits``/``squared``/``normalize``, each choice such as ``variant=cs`` or
``mining=all``, each keyword such as ``weight=balanced``, and one other value of each
number, e.g. ``delta``, ``gamma``, ``pos_weight``), with the optional roles unbound and
bound (distill's hard label, Dice's per-image group), and with one and several output
columns where a role takes either.

Inputs are drawn from each role's declared domain (``Role.domain_for(params)``: any real,
a probability, a distribution whose rows sum to 1, labels {0, 1} or {−1, +1}, class
indices 0..C−1, categorical labels), away from the domain's edges.

What is compared: the engine's gradient g = ∂(N·L)/∂output, as its states hand it to the
gradient summary (recorded where the state calls ``GradSummary.update`` and ``result``;
second passes run as the driver runs them), with central differences of N·L computed by
fresh states of the same loss; and, for the losses that are a mean over rows, the
kernel's per-row gradients ∂ℓᵢ/∂output (``Kernel.per_row``, what ``--reduction none``
and ``lossctl.per_row`` give) with central differences of the per-row losses.

Kinks: an element is skipped when a kink lies within the step of it, found where its
one-sided difference quotients (x+h against x, x against x−h) differ by more than the
tolerance: a smooth function's agree to O(h), a kink's (hinge, |r|, a mined
selection changing, a clip) do not. A smooth point is never skipped, so a wrong
gradient cannot hide there, and each case must check at least half of its elements.
"""
from __future__ import annotations

import contextlib
import sys
import zlib
from typing import Any, Iterator

import numpy as np
import pytest

from lossctl import registry
from lossctl.engine import Batch, Context, DecomposableState, Kernel, Options, State
from lossctl.errors import UsageError
from lossctl.losses import ALL

N = 8  # rows
WIDE = 3  # columns of a vector role (classes, embedding width, outputs)
H = 1e-6  # the finite-difference step (relative to max(1, |x|))
RTOL, ATOL = 2e-5, 2e-6

# losses whose gradient the engine does not compute (LossSpec.grad_roles empty), with the reason
NO_GRADIENT: dict[str, str] = {}


# ------------------------------------------------------------------ inputs from declared domains


def draw(domain: Any, rng: np.random.Generator, width: int, classes: int) -> np.ndarray:
    """N values of a role of this domain (``width`` columns; ``classes`` for class labels)."""
    kind = domain.kind
    shape = (N,) if width == 1 else (N, width)
    if kind == "real":
        return rng.normal(0.0, 1.0, shape)
    if kind in ("nonnegative", "positive"):
        return rng.uniform(0.1, 2.0, shape)
    if kind == "probability":
        return rng.uniform(0.05, 0.95, shape)
    if kind == "distribution":
        if width == 1:
            return rng.uniform(0.05, 0.95, shape)
        x = rng.uniform(0.2, 1.0, shape)
        return x / x.sum(axis=1, keepdims=True)
    if kind == "binary":
        return np.arange(N) % 2 * 1.0  # both labels present
    if kind == "signed":
        return np.where(np.arange(N) % 2 == 0, 1.0, -1.0)  # −1/+1 (0/1 is a relabelling of it)
    if kind == "class":
        return (np.arange(N) % max(classes, 2)).astype(float)  # every class present
    if kind == "categorical":
        return (np.arange(N) % 2).astype(float)  # two classes of N/2 rows (mined triplets need both)
    raise AssertionError(f"no generator for the domain {kind!r}: add one")


def _is_label(domain: Any) -> bool:
    return domain.kind in ("binary", "signed", "class", "categorical")


def _param_cases(spec: registry.LossSpec) -> list[dict[str, Any]]:
    base = spec.defaults()
    out = [base]
    for p in spec.params:
        alt: list[Any] = []
        if p.kind == "bool":
            alt = [not p.default]
        elif p.kind == "choice":
            alt = [c for c in p.choices if c != p.default]
        elif p.kind == "floats":
            alt = list(p.keywords)
        elif p.kind == "float" and p.name not in ("eps", "bce_eps"):  # eps: the clip, no change of form
            v = 0.7 * p.default if p.default else 0.3
            if p.interval is not None and v not in p.interval:
                v = 0.5 * (p.interval.low + min(p.interval.high, p.interval.low + 2.0))
            alt = [v] if v != p.default else []
        for v in alt:
            params = {**base, p.name: v}
            try:
                registry.coerce(spec, p.name, v)
            except Exception:  # noqa: BLE001 - a value the parameter refuses is no case
                continue
            out.append(params)
    return out


def _widths(spec: registry.LossSpec, task: str) -> tuple[int, ...]:
    if task == "binary":
        return (1,)
    if task == "multiclass":
        return (WIDE,)
    if any(r.vector is None and not _is_label(r.domain) for r in spec.roles):
        return (1, WIDE)
    return (WIDE,) if any(r.vector for r in spec.roles) else (1,)


def cases() -> Iterator[Any]:
    for spec in ALL:
        if not spec.grad_roles:
            continue
        optional = [r.name for r in spec.roles if not r.required]
        for task in spec.all_tasks:
            for width in _widths(spec, task):
                for bind_optional in (False, True) if optional else (False,):
                    for i, params in enumerate(_param_cases(spec)):
                        changed = registry.format_call(spec, params)
                        tag = f"{changed}-{task}-w{width}" + ("-opt" if bind_optional else "")
                        yield pytest.param(spec.name, task, width, bind_optional, params, id=tag)


def _inputs(spec: registry.LossSpec, task: str, width: int, bind_optional: bool, params: dict,
            seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = width if width > 1 else 2
    cols = {}
    for r in spec.roles:
        if not r.required and not bind_optional:
            continue
        dom = r.domain_for(params)
        w = 1 if _is_label(dom) or r.vector is False else width
        cols[r.name] = draw(dom, rng, w, classes)
    return cols


# ------------------------------------------------------------------ running the engine


class _Recorder:
    """Stands in for GradSummary: keeps every gradient the state hands it, and the scale
    it finally applies (``result(scale)``)."""

    rows_bound = None

    def __init__(self, *a: Any, **k: Any) -> None:
        self.parts: list[np.ndarray] = []
        self.scale: float | None = None

    def update(self, g: np.ndarray, offset: Any = 0) -> None:
        self.parts.append(np.array(g, dtype=float))

    def result(self, scale: float = 1.0) -> dict:
        self.scale = scale
        return {}

    def sample(self, scale: float = 1.0) -> list:
        return []

    def merge(self, other: Any) -> None:
        self.parts += other.parts

    def top1_exact(self) -> bool:
        return True

    def top1_note(self) -> str:
        return ""

    def gradient(self) -> np.ndarray:
        assert self.scale is not None, "the state never reported its gradient"
        return np.concatenate(self.parts, axis=0) * self.scale


@contextlib.contextmanager
def _recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, mod in list(sys.modules.items()):
        if name.startswith("lossctl") and getattr(mod, "GradSummary", None) is not None:
            monkeypatch.setattr(mod, "GradSummary", _Recorder)
    yield


def _context(spec: registry.LossSpec, task: str, cols: dict[str, np.ndarray], grad: bool) -> Context:
    p, t = cols.get("pred"), cols.get("target")
    return Context(task=task, grad=grad, rows_bound=N,
                   n_classes=p.shape[1] if p is not None and p.ndim == 2 else None,
                   target_kind="vector" if t is not None and t.ndim == 2 else "scalar")


def _run(spec, task, params, base: dict, cols: dict, grad: bool) -> State:
    """A fresh state over one batch of ``cols``, as the driver runs it (pre-pass, pass, second
    pass). Validation and the pre-pass read ``base``, the unperturbed inputs: a perturbed
    distribution is off the simplex by the step, which validation would rightly refuse."""
    ctx = _context(spec, task, base, grad)
    obj = spec.factory(params, ctx)
    state = obj if isinstance(obj, State) else DecomposableState(obj, Options(grad=grad))
    k = getattr(state, "kernel", None)
    b0 = Batch(dict(base), N)
    if k is not None and k.needs_prepass:
        k.validate(b0)
        k.prepass(b0)
        k.end_prepass()
    if k is not None:
        k.validate(b0)
    elif hasattr(state, "validate"):
        state.validate(b0)
    b = Batch(dict(cols), N)
    state.update(b)
    if state.two_pass:
        state.update2(b)
    return state


def _value(spec, task, params, base, cols) -> float:
    return float(_run(spec, task, params, base, cols, False).result()["value"])


def _engine_gradient(spec, task, params, base) -> dict[str, np.ndarray]:
    st = _run(spec, task, params, base, base, True)
    st.result()
    by_role = getattr(st, "grad_by_role", {}) or {}
    if by_role:
        return {r: rec.gradient().reshape(base[r].shape) for r, rec in by_role.items()}
    roles = [r for r in spec.grad_roles if r in base]
    assert len(roles) == 1, roles
    return {roles[0]: st.grad.gradient().reshape(base[roles[0]].shape)}


def _compare(name: str, got: np.ndarray, f_plus: np.ndarray, f0: np.ndarray, f_minus: np.ndarray,
             h: np.ndarray) -> tuple[int, int]:
    """(checked, skipped): elements where one-sided quotients agree are compared."""
    central = (f_plus - f_minus) / (2 * h)
    right, left = (f_plus - f0) / h, (f0 - f_minus) / h
    scale = np.maximum(1.0, np.abs(central))
    kink = np.abs(right - left) > 1e-3 * scale  # a smooth function's agree to O(h·f'')
    finite = np.isfinite(central) & np.isfinite(got)
    check = ~kink & finite
    bad = check & (np.abs(got - central) > ATOL + RTOL * np.abs(central))
    assert not bad.any(), (
        f"{name}: engine gradient differs from central differences at {np.argwhere(bad)[:5].tolist()}: "
        f"engine {got[bad][:5]}, differences {central[bad][:5]}"
    )
    return int(check.sum()), int((~check).sum())


# ------------------------------------------------------------------ the tests


def test_every_loss_without_a_gradient_is_listed():
    assert {s.name for s in ALL if not s.grad_roles} == set(NO_GRADIENT)


def test_every_loss_is_covered():
    covered = {c.values[0] for c in cases()}
    assert covered == {s.name for s in ALL} - set(NO_GRADIENT)


@pytest.mark.parametrize("name,task,width,bind_optional,params", list(cases()))
def test_gradient_matches_central_differences(name, task, width, bind_optional, params, monkeypatch):
    spec = registry.get(name)
    base = _inputs(spec, task, width, bind_optional, params, seed=zlib.crc32(f"{name}{task}{width}".encode()))
    try:
        with _recording(monkeypatch):
            got = _engine_gradient(spec, task, params, base)
    except UsageError as e:  # a combination the loss refuses (pos_weight with C classes)
        pytest.skip(f"refused: {e}")
    assert set(got) == {r for r in spec.grad_roles if r in base}
    checked = skipped = 0
    f0 = _value(spec, task, params, base, base) * N
    for role, g in got.items():
        x = base[role]
        flat = x.reshape(N, -1)
        for j in range(flat.shape[1]):
            for i in range(N):
                h = H * max(1.0, abs(flat[i, j]))
                vals = []
                for step in (h, -h):
                    xp = flat.copy()
                    xp[i, j] += step
                    vals.append(_value(spec, task, params, base, {**base, role: xp.reshape(x.shape)}) * N)
                c, s = _compare(f"{spec.name}:{role}[{i},{j}]", np.array([g.reshape(N, -1)[i, j]]),
                                np.array([vals[0]]), np.array([f0]), np.array([vals[1]]), np.array([h]))
                checked += c
                skipped += s
    assert checked >= skipped, f"{checked} elements checked, {skipped} skipped (kinks or non-finite)"


def _row_mean_cases() -> list[Any]:
    return [c for c in cases() if registry.get(c.values[0]).row_mean]


@pytest.mark.parametrize("name,task,width,bind_optional,params", _row_mean_cases())
def test_per_row_gradient_matches_central_differences(name, task, width, bind_optional, params):
    spec = registry.get(name)
    base = _inputs(spec, task, width, bind_optional, params, seed=zlib.crc32(f"{name}{task}{width}rows".encode()))
    ctx = _context(spec, task, base, True)
    k = spec.factory(params, ctx)
    assert isinstance(k, Kernel)
    b0 = Batch(dict(base), N)
    try:
        k.validate(b0)
    except UsageError as e:  # a combination the loss refuses
        pytest.skip(f"refused: {e}")
    if k.needs_prepass:
        k.prepass(b0)
        k.end_prepass()
    loss0, grads = k.per_row(b0, True)
    # (copies: a kernel may hand back its scratch buffers, reused by its next call)
    loss0, grads = np.array(loss0), None if grads is None else {r: np.array(g) for r, g in grads.items()}
    assert grads is not None and set(grads) == {r for r in spec.grad_roles if r in base}
    checked = skipped = 0
    for role, g in grads.items():
        x = base[role]
        flat = x.reshape(N, -1)
        for j in range(flat.shape[1]):  # rows are independent: perturb a whole column at once
            h = H * np.maximum(1.0, np.abs(flat[:, j]))
            out = []
            for sign in (1, -1):
                xp = flat.copy()
                xp[:, j] += sign * h
                out.append(np.array(k.per_row(Batch({**base, role: xp.reshape(x.shape)}, N), False)[0]))
            c, s = _compare(f"{spec.name}:{role}[:,{j}]", g.reshape(N, -1)[:, j], out[0], loss0, out[1], h)
            checked += c
            skipped += s
    assert checked >= skipped, f"{checked} elements checked, {skipped} skipped (kinks or non-finite)"


def test_the_kink_rule_skips_a_kink_and_nothing_smooth():
    h = np.array([H])
    # |x| at 0: one-sided quotients +1 and −1, a kink within the step: skipped, whatever the engine says
    assert _compare("abs", np.array([0.7]), h, np.array([0.0]), h, h) == (0, 1)
    # x² at 1 (smooth): checked; a wrong gradient fails, the right one passes
    f = lambda x: x * x  # noqa: E731
    fp, f0, fm = np.array([f(1 + H)]), np.array([f(1.0)]), np.array([f(1 - H)])
    assert _compare("square", np.array([2.0]), fp, f0, fm, h) == (1, 0)
    with pytest.raises(AssertionError, match="differs from central differences"):
        _compare("square", np.array([2.01]), fp, f0, fm, h)
