"""Segmentation losses: Dice, generalized Dice, Dice + BCE and Tversky.

Rows are pixels. The target is a mask: one 0/1 column (binary, one channel), an
integer class column 0..C−1, or C one-hot columns; the prediction is one column of
foreground probabilities (or logits with ``logits``) or C columns of class
probabilities (softmax logits). Region losses are ratios of sums: per class c the
sufficient statistics are I_c = Σᵢ pᵢ꜀gᵢ꜀, P_c = Σᵢ pᵢ꜀ (Σp² with ``squared``) and
G_c = Σᵢ gᵢ꜀ (Tversky: Σpg, Σp(1−g), Σ(1−p)g), so a file is evaluated exactly in
streaming batches and the bootstrap resamples rows (never per-row losses).

An optional ``group`` role (an image id) gives one loss per image, from that image's
sums, and reports their mean: MONAI's ``batch=False``. Without it the sums run over
the whole file: MONAI's ``batch=True``.

The reported gradient is g = ∂(N·L)/∂(output), N the number of rows; it needs the
final sums, so it is computed in a second pass over the data.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from lossctl.engine import Batch, Context, DecomposableState, Kernel, Options
from lossctl.errors import InputError, UsageError
from lossctl.losses._numerics import EPS, clip_prob, log_softmax, sigmoid, softmax, softplus
from lossctl.spec import (
    BINARY, CATEGORICAL, CLASS, DISTRIBUTION, REAL, Interval, LossSpec, Param, Pass, Properties, Role,
    check_domain, heredoc,
)

SEG = "segmentation"
DICE_EPS = 1e-6
SUM_TOL = 1e-6  # class probabilities of a pixel must sum to 1 within this
PER_IMAGE_LIMIT = 1000  # per-image values are listed in the result up to this many images

# ---------------------------------------------------------------- inputs


def _probabilities(pred: np.ndarray, logits: bool) -> np.ndarray:
    """(n, C) class probabilities: sigmoid of one logit column, softmax of C."""
    if not logits:
        return pred
    return sigmoid(pred) if pred.shape[1] == 1 else softmax(pred)


def _one_hot(target: np.ndarray, c: int) -> np.ndarray:
    """(n, C) one-hot mask from a 0/1 column (C = 1), class indices or one-hot columns."""
    if target.ndim == 2 and target.shape[1] == c:
        return target
    t = target.reshape(-1)
    if c == 1:
        return t[:, None]
    out = np.zeros((t.shape[0], c))
    out[np.arange(t.shape[0]), t.astype(np.intp)] = 1.0
    return out


def _as_matrix(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


# ---------------------------------------------------------------- kernels


class SegmentationKernel(Kernel):
    """The shared machinery of the region losses.

    Subclasses give ``region_stats(P, Y, w)`` (a list of (n, C) arrays whose column
    sums determine the loss), ``region_value(T)`` (vectorised over leading axes of
    the totals T) and ``region_grad(P, Y, T)`` (∂L/∂P, (n, C), for totals T of shape
    (S,) or one row of totals per pixel, (n, S)).
    """

    row_mean = False
    two_pass_grad = True
    name = ""

    def __init__(self, params: Mapping[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.eps = float(params.get("eps", DICE_EPS))
        self.logits = bool(params.get("logits", False))
        self.include_background = bool(params.get("include_background", True))
        self.C: int | None = None
        self.inc = np.zeros(0, dtype=np.intp)  # the classes the loss covers
        self.notes: list[str] = []

    # -- shape and domain
    def setup(self, c: int) -> None:
        """Fix the number of classes (channels) from the first batch."""
        if self.C is not None:
            if c != self.C:
                raise InputError.at(f"the prediction has {c} columns here but {self.C} before")
            return
        self.C = c
        if c == 1 or self.include_background:
            self.inc = np.arange(c)
        else:
            self.inc = np.arange(1, c)
        if c == 1 and not self.include_background:
            self.notes.append(
                "include_background=false is ignored for a one-channel (binary) prediction, as MONAI does"
            )
        self.configure(c)

    def configure(self, c: int) -> None:
        """Per-loss checks once C is known."""

    def validate(self, b: Batch) -> None:
        pred = b["pred"]
        c = 1 if pred.ndim == 1 else pred.shape[1]
        self.setup(c)
        tgt = b["target"]
        if not self.logits:
            check_domain(b, "pred", PRED.domain, "probabilities must lie in [0, 1] (logits=true, or --logits, reads logits)")
            if c > 1:
                s = np.sum(pred, axis=1, dtype=np.float64)
                bad = np.abs(s - 1.0) > SUM_TOL
                if bad.any():
                    raise b.fail(
                        f"the {c} class probabilities of a pixel must sum to 1 within {SUM_TOL:g} "
                        "(logits=true reads softmax logits)", "pred", bad, values=s,
                    )
        if tgt.ndim == 2 and tgt.shape[1] == 1:
            tgt = tgt[:, 0]
        if tgt.ndim == 1:
            if c == 1:
                check_domain(b, "target", BINARY, "mask values must be 0 or 1 (a one-channel prediction is binary)", tgt)
            else:
                check_domain(b, "target", TARGET.domain.classes(c),
                             f"mask values must be class indices 0..{c - 1} (the prediction has {c} columns)", tgt)
        else:
            if tgt.shape[1] != c:
                raise InputError.at(
                    f"the mask has {tgt.shape[1]} one-hot columns but the prediction has {c}",
                    source=b.source or None, column=b.columns.get("target", "target"),
                    row=b.input_row(0) if b.n else None,
                )
            check_domain(b, "target", BINARY, "one-hot mask values must be 0 or 1")
            bad = np.sum(tgt, axis=1) != 1
            if bad.any():
                raise b.fail("a one-hot mask row must have exactly one 1", "target", bad,
                             values=np.sum(tgt, axis=1))
        gid = b.get("group")
        if gid is not None:
            bad = _missing(gid)
            if bad.any():
                raise b.fail("missing image id", "group", bad)

    def prep(self, b: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(P, Y, w): (n, C) probabilities and one-hot mask, float64, and the sample weights."""
        pred = _as_matrix(b["pred"])
        self.setup(pred.shape[1])
        c = pred.shape[1]
        roles = ("target", "pred")
        p = b.shared(f"seg.P.{self.logits}", roles, lambda: _probabilities(pred, self.logits))
        y = b.shared(f"seg.Y.{c}", roles, lambda: _one_hot(np.asarray(b["target"], dtype=np.float64), c))
        w = None if b.weight is None else np.asarray(b.weight, dtype=np.float64)
        return p, y, w

    # -- the decomposable interface
    def stats(self, b: Batch, grad: bool) -> tuple[list[Any], None]:
        p, y, w = self.prep(b)
        return self.region_stats(p, y, w) + self.pixel_stats(b, p, y, w), None

    def region_stats(self, p: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> list[np.ndarray]:
        raise NotImplementedError

    def region_value(self, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def region_grad(self, p: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def region_parts(self, t: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def pixel_stats(self, b: Batch, p: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> list[Any]:
        return []

    def split(self, t: np.ndarray, k: int) -> np.ndarray:
        """The k-th per-class block of the totals: (..., C)."""
        c = self.C or 1
        return t[..., k * c:(k + 1) * c]

    def value(self, totals: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.region_value(np.asarray(totals, dtype=np.float64))

    def parts(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Components reported beside the value (per class, Dice and BCE parts)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.region_parts(np.asarray(totals, dtype=np.float64))

    def extra(self, totals: np.ndarray) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.parts(totals).items()}

    def grad2(self, b: Batch, totals: np.ndarray, n: int) -> dict[str, np.ndarray]:
        return {"pred": self.output_grad(b, totals, float(n))}

    def output_grad(self, b: Batch, t: np.ndarray, scale: float) -> np.ndarray:
        """∂(scale · L_t)/∂output per row, L_t the loss at totals t ((S,) or (n, S))."""
        p, y, w = self.prep(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = self.region_grad(p, y, t)
            if w is not None:
                q = q * w[:, None]
            q = q * scale
            if self.logits:
                q = _chain(q, p)
            g = q + self.pixel_grad(b, p, y, w, t, scale)
        pred = b["pred"]
        return g.reshape(pred.shape) if pred.ndim == 1 or pred.shape[1] == 1 else g

    def pixel_grad(self, b: Batch, p: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                   t: np.ndarray, scale: float) -> np.ndarray | float:
        return 0.0

    # -- helpers for macro averages over the covered classes
    def macro(self, per_class: np.ndarray) -> np.ndarray:
        return np.mean(per_class, axis=-1)


def _missing(ids: np.ndarray) -> np.ndarray:
    if ids.dtype.kind == "f":
        return np.isnan(ids)
    if ids.dtype.kind == "O":
        return np.fromiter((v is None or (isinstance(v, float) and v != v) for v in ids), bool, ids.shape[0])
    return np.zeros(ids.shape[0], dtype=bool)


def _chain(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """∂L/∂z from ∂L/∂p: sigmoid p(1−p)·q for one channel, softmax p ⊙ (q − Σ q p) for C."""
    if p.shape[1] == 1:
        return q * p * (1.0 - p)
    return p * (q - np.sum(q * p, axis=1, keepdims=True))


def _plain(v: Any) -> Any:
    a = np.asarray(v, dtype=float)
    return float(a) if a.ndim == 0 else [float(x) for x in a]


class DiceKernel(SegmentationKernel):
    """1 − (2I + ε)/(P + G + ε) per class; macro mean, weighted sum (weight) or weighted mean over classes."""

    name = "dice"

    def __init__(self, params: Mapping[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.squared = bool(params.get("squared", False))
        self.average = params.get("average", "macro")
        self.weight = params.get("weight")
        # LOSSES.md: "the macro mean (or the weighted sum with `weight`)": weight alone gives
        # Σ_c w_c D_c as written; average=weighted normalises it to a weighted mean
        self.class_weight: np.ndarray | None = None

    def configure(self, c: int) -> None:
        if self.weight is None:
            return
        w = np.asarray(self.weight, dtype=float)
        k = self.inc.size
        if w.size == c:
            w = w[self.inc]
        elif w.size != k:
            also = f" ({k} without the background)" if k != c else ""
            raise UsageError(
                f"The 'weight' parameter of {self.name} must have one number per class: "
                f"{c}{also}. Got {w.size} instead."
            )
        if not w.sum() > 0:
            raise UsageError(f"The 'weight' parameter of {self.name} must not be all zero.")
        self.class_weight = w / w.sum() if self.average == "weighted" else w

    def region_stats(self, p, y, w):
        i = p * y
        pp = p * p if self.squared else p
        gg = y * y if self.squared else y
        if w is not None:
            wc = w[:, None]
            i, pp, gg = i * wc, pp * wc, gg * wc
        return [i, pp, gg]

    def class_average(self, g_tot: np.ndarray) -> np.ndarray:
        """Weights a_c over the covered classes, (..., C'): 1/C (macro), the weight as given
        (a weighted sum), weight/Σweight or the class support (average=weighted)."""
        k = self.inc.size
        if self.class_weight is not None:
            return np.broadcast_to(self.class_weight, g_tot.shape[:-1] + (k,))
        if self.average != "weighted":
            return np.full(g_tot.shape[:-1] + (k,), 1.0 / k)
        # support weights, as scikit-learn's average='weighted': a_c ∝ Σᵢ gᵢ꜀
        g = g_tot[..., self.inc]
        s = np.sum(g, axis=-1, keepdims=True)
        return np.where(s > 0, g / np.where(s > 0, s, 1.0), 1.0 / k)

    def per_class(self, t: np.ndarray) -> np.ndarray:
        i, p, g = (self.split(t, k)[..., self.inc] for k in range(3))
        return 1.0 - (2.0 * i + self.eps) / (p + g + self.eps)

    def region_value(self, t):
        d = self.per_class(t)
        return np.sum(self.class_average(self.split(t, 2)) * d, axis=-1)

    def region_parts(self, t):
        return {"per_class": self.per_class(t)} if self.inc.size > 1 else {}

    def region_grad(self, p, y, t):
        inc = self.inc
        i, pt, gt = (self.split(t, k)[..., inc] for k in range(3))
        den = pt + gt + self.eps
        num = 2.0 * i + self.eps
        dp = 2.0 * p[:, inc] if self.squared else 1.0
        # erratum 7: ∂D/∂pⱼ = −[2gⱼ(S + ε) − (2I + ε)·∂P/∂pⱼ] / (S + ε)², S = P + G
        dd = -(2.0 * y[:, inc] * den - num * dp) / (den * den)
        q = np.zeros_like(p)
        q[:, inc] = self.class_average(self.split(t, 2)) * dd
        return q


class GeneralizedDiceKernel(SegmentationKernel):
    """1 − (2Σ_c w_c I_c + ε)/(Σ_c w_c (P_c + G_c) + ε), w_c = 1/G_c² (Crum et al.)."""

    name = "generalized_dice"

    def region_stats(self, p, y, w):
        i = p * y
        if w is None:
            return [i, p, y]
        wc = w[:, None]
        return [i * wc, p * wc, y * wc]

    def class_weights(self, g: np.ndarray) -> np.ndarray:
        # MONAI w_type="square": an absent class (G_c = 0, w = inf) gets the largest finite weight
        w = 1.0 / (g * g)
        inf = np.isinf(w)
        finite = np.where(inf, 0.0, w)
        return np.where(inf, np.max(finite, axis=-1, keepdims=True), finite)

    def _terms(self, t):
        inc = self.inc
        i, p, g = (self.split(t, k)[..., inc] for k in range(3))
        w = self.class_weights(g)
        num = 2.0 * np.sum(w * i, axis=-1) + self.eps
        den = np.sum(w * (p + g), axis=-1) + self.eps
        return w, num, den

    def region_value(self, t):
        _, num, den = self._terms(t)
        return 1.0 - num / den

    def region_grad(self, p, y, t):
        w, num, den = self._terms(t)
        num, den = np.asarray(num)[..., None], np.asarray(den)[..., None]
        q = np.zeros_like(p)
        q[:, self.inc] = -w * (2.0 * y[:, self.inc] * den - num) / (den * den)
        return q


class TverskyKernel(SegmentationKernel):
    """1 − (TP + ε)/(TP + α·FP + β·FN + ε) per class, macro mean (Salehi et al. 2017)."""

    name = "tversky"

    def __init__(self, params: Mapping[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.alpha = float(params["alpha"])
        self.beta = float(params["beta"])

    def region_stats(self, p, y, w):
        tp = p * y
        fp = p * (1.0 - y)
        fn = (1.0 - p) * y
        if w is None:
            return [tp, fp, fn]
        wc = w[:, None]
        return [tp * wc, fp * wc, fn * wc]

    def per_class(self, t):
        tp, fp, fn = (self.split(t, k)[..., self.inc] for k in range(3))
        return 1.0 - (tp + self.eps) / (tp + self.alpha * fp + self.beta * fn + self.eps)

    def region_value(self, t):
        return self.macro(self.per_class(t))

    def region_parts(self, t):
        return {"per_class": self.per_class(t)} if self.inc.size > 1 else {}

    def region_grad(self, p, y, t):
        inc = self.inc
        tp, fp, fn = (self.split(t, k)[..., inc] for k in range(3))
        num = tp + self.eps
        den = tp + self.alpha * fp + self.beta * fn + self.eps
        yi = y[:, inc]
        dden = yi + self.alpha * (1.0 - yi) - self.beta * yi  # ∂den/∂pⱼ
        q = np.zeros_like(p)
        q[:, inc] = -(yi * den - num * dden) / (den * den) / inc.size
        return q


class DiceBCEKernel(DiceKernel):
    """α·Dice + (1 − α)·BCE; the BCE part is a (weighted) pixel mean, cross-entropy for C > 1."""

    name = "dice_bce"

    def __init__(self, params: Mapping[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.alpha = float(params["alpha"])
        self.bce_eps = float(params["bce_eps"])
        self.pos_weight = float(params["pos_weight"])

    def configure(self, c: int) -> None:
        super().configure(c)
        if c > 1 and self.pos_weight != 1.0:
            raise UsageError(
                "The 'pos_weight' parameter of dice_bce applies to a binary (one-channel) prediction; "
                f"this one has {c} classes."
            )

    def pixel_loss(self, b: Batch, p: np.ndarray, y: np.ndarray) -> np.ndarray:
        z = _as_matrix(b["pred"])
        if p.shape[1] == 1:
            yy, zz, pp = y[:, 0], z[:, 0], p[:, 0]
            if self.logits:
                # −[w₊ y log σ(z) + (1−y) log σ(−z)] = w₊ y softplus(−z) + (1−y) softplus(z)
                return self.pos_weight * yy * softplus(-zz) + (1.0 - yy) * softplus(zz)
            pc = clip_prob(pp, self.bce_eps)
            return -(self.pos_weight * yy * np.log(pc) + (1.0 - yy) * np.log1p(-pc))
        if self.logits:
            return -np.sum(y * log_softmax(z), axis=1)
        return -np.sum(y * np.log(clip_prob(p, self.bce_eps)), axis=1)

    def pixel_stats(self, b, p, y, w):
        loss = self.pixel_loss(b, p, y)
        if w is None:
            return [loss, 1.0]
        return [loss * w, w]

    def _pixel_mean(self, t):
        c = self.C or 1
        return t[..., 3 * c] / t[..., 3 * c + 1]

    def region_value(self, t):
        return self.alpha * super().region_value(t) + (1.0 - self.alpha) * self._pixel_mean(t)

    def region_parts(self, t):
        out = super().region_parts(t)
        out["dice"] = super().region_value(t)
        out["bce" if self.C == 1 else "ce"] = self._pixel_mean(t)
        return out

    def region_grad(self, p, y, t):
        return self.alpha * super().region_grad(p, y, t)

    def pixel_grad(self, b, p, y, w, t, scale):
        c = self.C or 1
        wsum = np.asarray(t[..., 3 * c + 1], dtype=float)
        z = _as_matrix(b["pred"])
        if p.shape[1] == 1:
            if self.logits:
                s = sigmoid(z)
                d = self.pos_weight * y * (s - 1.0) + (1.0 - y) * s
            else:
                pc = clip_prob(p, self.bce_eps)
                d = -self.pos_weight * y / pc + (1.0 - y) / (1.0 - pc)
        else:
            d = softmax(z) - y if self.logits else -y / clip_prob(p, self.bce_eps)
        f = (1.0 - self.alpha) * scale / wsum
        f = f[:, None] if np.ndim(f) == 1 else f
        if w is not None:
            d = d * w[:, None]
        return d * f


# ---------------------------------------------------------------- the state


class SegmentationState(DecomposableState):
    """Global sums (no group role) or one set of sums per image (group role bound).

    Without a group this is the engine's decomposable state: exact streaming,
    mergeable, bootstrapped over rows. With a group it keeps a compensated row of
    sufficient statistics per image (memory O(images × classes)); the value is the
    mean of the per-image losses and the bootstrap resamples images.
    """

    def __init__(self, kernel: SegmentationKernel, ctx: Context) -> None:
        # the factory does not see --ci, so row units are always kept (bounded:
        # at most 2^15 rows, then 4096 hashed blocks); they cost nothing without --ci
        super().__init__(kernel, Options(grad=ctx.grad, ci=0.95))
        self.kernel: SegmentationKernel = kernel
        self.grouped: bool | None = None
        # the per-image table: image ids → rows of compensated sums (lossctl.slices, as --by)
        from lossctl.slices import GroupSums, Keys

        self.images = Keys(1)
        self.table: GroupSums | None = None
        self._gfinal: np.ndarray | None = None

    @property
    def ids(self) -> list[Any]:
        """The image ids, in the order first seen."""
        return self.images.cols[0].values

    # -- the per-image table
    def _groups(self, ids: np.ndarray):
        from lossctl.slices import first_seen

        return self.images.batch([first_seen(ids)])

    def _table(self) -> np.ndarray:
        if self.table is None:
            return np.zeros((len(self.ids), 0))
        return self.table.values(len(self.ids))[0]

    # -- State
    def update(self, b: Batch) -> None:
        if b.n == 0:
            return
        if self.grouped is None:
            self.grouped = b.get("group") is not None
            if self.grouped:
                self.boot = _ImageUnits(self)
        if not self.grouped:
            super().update(b)
            return
        from lossctl.slices import GroupSums, group_sums

        stats, _ = self.kernel.stats(b, False)
        bg = self._groups(b["group"])
        sums = group_sums(bg, stats)
        if self.table is None:
            self.table = GroupSums(sums.shape[1])
        self.table.add(bg.gids[bg.present], sums[bg.present])
        self.n += b.n

    def update2(self, b: Batch) -> None:
        if not self.grouped:
            super().update2(b)
            return
        if b.n == 0 or self.grad is None:
            return
        self._add_grads({"pred": self.image_grad(b)}, b)

    def image_grad(self, b: Batch) -> np.ndarray:
        """∂(N·L)/∂output with L the mean over images of each image's loss."""
        if self._gfinal is None:
            self._gfinal = self._table()
        bg = self._groups(b["group"])
        t = self._gfinal[bg.gids[bg.codes]]
        return self.kernel.output_grad(b, t, self.n / len(self.ids))

    @property
    def unmergeable_reason(self) -> str | None:  # type: ignore[override]
        if self.grouped:
            return ("per-image segmentation states (an image id column bound, by --col group or by its name) "
                    "cannot be saved to a file yet; evaluate whole files, or shards whose image id column is "
                    "left out (the global Dice over all pixels merges)")
        return super().unmergeable_reason

    def __getstate__(self) -> dict[str, Any]:
        d = super().__getstate__()
        d["_gfinal"] = None  # the second pass's copy of the per-image table
        return d

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["classes"] = self.kernel.C
        return d

    def load(self, d: dict[str, Any]) -> "SegmentationState":
        super().load(d)
        self.grouped = False
        if d.get("classes"):
            self.kernel.setup(int(d["classes"]))  # the class layout the shard saw
        return self

    def merge(self, other) -> None:
        assert isinstance(other, SegmentationState)
        if other.grouped is None:
            return
        if self.grouped is None:
            self.grouped = other.grouped
            if self.grouped:
                self.boot = _ImageUnits(self)
        if not self.grouped:
            super().merge(other)
            return
        from lossctl.slices import GroupSums

        if other.table is not None:
            table = other._table()
            rows = self.images.cols[0].lookup(list(other.ids))
            if self.table is None:
                self.table = GroupSums(table.shape[1])
            self.table.add(rows, table)
        if self.grad is not None and other.grad is not None:
            self.grad.merge(other.grad)
        self.n += other.n

    def image_values(self) -> np.ndarray:
        return np.asarray(self.kernel.value(self._table()), dtype=float).reshape(-1)

    def result(self) -> dict[str, Any]:
        if not self.grouped:
            out = super().result()
            if self.kernel.notes:
                out["notes"] = list(self.kernel.notes)
            return out
        out: dict[str, Any] = {"n": self.n}
        if self.n == 0:
            out["value"] = math.nan
            return out
        table = self._table()
        vals = self.image_values()
        out["value"] = float(np.mean(vals))
        extra: dict[str, Any] = {"images": len(self.ids)}
        for k, v in self.kernel.parts(table).items():
            extra[k] = _plain(np.mean(v, axis=0))
        if len(self.ids) <= PER_IMAGE_LIMIT:
            extra["per_image"] = [{"image": _native(k), "value": float(v)} for k, v in zip(self.ids, vals)]
        out["extra"] = extra
        notes = list(self.kernel.notes)
        if len(self.ids) > PER_IMAGE_LIMIT:
            notes.append(f"{len(self.ids)} images: per-image values are listed up to {PER_IMAGE_LIMIT}")
        if notes:
            out["notes"] = notes
        if self.grad is not None:
            out["grad"] = self.grad.result(1.0)
            out["grad_sample"] = self.grad.sample(1.0)
        return out

    def boot_fn(self):
        if not self.grouped:
            return super().boot_fn()
        return lambda t: t[..., 0] / t[..., 1]


class _ImageUnits:
    """Bootstrap units for the per-image mode: one row [L_image, 1] per image."""

    def __init__(self, state: SegmentationState) -> None:
        self.state = state

    @property
    def count(self) -> int:
        return len(self.state.ids)

    def matrix(self) -> tuple[np.ndarray, str]:
        v = self.state.image_values()
        return np.column_stack([v, np.ones_like(v)]), "percentile bootstrap over images (group)"

    def merge(self, other: Any) -> None:  # the table itself is merged by the state
        pass


def _native(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# ---------------------------------------------------------------- pure functions


def _evaluate(kernel_cls: type[SegmentationKernel], spec: str, target: Any, pred: Any,
              group: Any, sample_weight: Any, params: dict[str, Any], grad: bool):
    full = next(s for s in LOSSES if s.name == spec).defaults()
    full.update(params)
    ctx = Context(task=SEG, grad=False)
    k = kernel_cls(full, ctx)
    t = np.asarray(target, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    cols = {"target": t, "pred": p}
    if group is not None:
        cols["group"] = np.asarray(group)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    b = Batch(cols, p.shape[0], w)
    k.validate(b)
    st = SegmentationState(k, ctx)
    st.update(b)
    value = float(np.mean(st.image_values())) if st.grouped else float(k.value(st.final_totals()))
    if not grad:
        return value
    g = st.image_grad(b) if st.grouped else k.output_grad(b, st.final_totals(), float(b.n))
    return value, g


def dice(target: Any, pred: Any, *, eps: float = DICE_EPS, squared: bool = False, logits: bool = False,
         average: str = "macro", include_background: bool = True, weight: Any = None,
         group: Any = None, sample_weight: Any = None) -> float:
    """Dice loss 1 − (2Σpg + ε)/(Σp + Σg + ε), per class then averaged.

    Args:
      target: (n,) 0/1 mask, (n,) class indices, or (n, C) one-hot.
      pred: (n,) foreground probabilities (logits with ``logits``), or (n, C).
      group: optional (n,) image ids: the mean of one Dice loss per image.
    Returns:
      The loss (a float).
    References:
      Milletari et al. 2016 (V-Net, ``squared``); MONAI ``DiceLoss``.
    """
    params = dict(eps=eps, squared=squared, logits=logits, average=average,
                  include_background=include_background, weight=None if weight is None else tuple(weight))
    return _evaluate(DiceKernel, "dice", target, pred, group, sample_weight, params, False)


def dice_grad(target: Any, pred: Any, **kw: Any) -> np.ndarray:
    """g = ∂(N·dice)/∂pred, same shape as ``pred`` (same keywords as :func:`dice`)."""
    return _grad(DiceKernel, "dice", target, pred, kw)


def generalized_dice(target: Any, pred: Any, *, eps: float = DICE_EPS, logits: bool = False,
                     include_background: bool = True, group: Any = None, sample_weight: Any = None) -> float:
    """Generalized Dice loss (Sudre et al. 2017) with w_c = 1/(Σg_c)², MONAI's absent-class rule."""
    params = dict(eps=eps, logits=logits, include_background=include_background)
    return _evaluate(GeneralizedDiceKernel, "generalized_dice", target, pred, group, sample_weight, params, False)


def generalized_dice_grad(target: Any, pred: Any, **kw: Any) -> np.ndarray:
    return _grad(GeneralizedDiceKernel, "generalized_dice", target, pred, kw)


def tversky(target: Any, pred: Any, *, alpha: float = 0.5, beta: float = 0.5, eps: float = DICE_EPS,
            logits: bool = False, include_background: bool = True, group: Any = None,
            sample_weight: Any = None) -> float:
    """Tversky loss 1 − (TP + ε)/(TP + α·FP + β·FN + ε), soft counts, macro over classes."""
    params = dict(alpha=alpha, beta=beta, eps=eps, logits=logits, include_background=include_background)
    return _evaluate(TverskyKernel, "tversky", target, pred, group, sample_weight, params, False)


def tversky_grad(target: Any, pred: Any, **kw: Any) -> np.ndarray:
    return _grad(TverskyKernel, "tversky", target, pred, kw)


def dice_bce(target: Any, pred: Any, *, alpha: float = 0.5, group: Any = None, sample_weight: Any = None,
             **kw: Any) -> float:
    """α·Dice + (1 − α)·BCE (cross-entropy for C > 1); ``kw`` as :func:`dice` plus bce_eps, pos_weight."""
    params = dict(kw, alpha=alpha)
    if params.get("weight") is not None:
        params["weight"] = tuple(params["weight"])
    return _evaluate(DiceBCEKernel, "dice_bce", target, pred, group, sample_weight, params, False)


def dice_bce_grad(target: Any, pred: Any, **kw: Any) -> np.ndarray:
    return _grad(DiceBCEKernel, "dice_bce", target, pred, kw)


def _grad(kernel_cls, spec, target, pred, kw):
    kw = dict(kw)
    group = kw.pop("group", None)
    sw = kw.pop("sample_weight", None)
    if kw.get("weight") is not None:
        kw["weight"] = tuple(kw["weight"])
    return _evaluate(kernel_cls, spec, target, pred, group, sw, kw, True)[1]


# ---------------------------------------------------------------- registry

TARGET = Role(
    "target", vector=None,
    help="the mask: a 0/1 column, an integer class column 0..C−1, or C one-hot columns",
    names=("mask", "label_mask", "y_mask", "gt_mask", "true_mask", "mask_*"),
    domain=CLASS,
)
PRED = Role(
    "pred", vector=None,
    help="foreground probability (one column) or C class probabilities; logits with logits=true",
    domain=DISTRIBUTION, logit_domain=REAL,
)
GROUP = Role(
    "group", required=False,
    help="image id: one loss per image from its own sums, then their mean (MONAI batch=False)",
    names=("image_id", "img_id", "image", "img"),
    domain=CATEGORICAL,
)
ROLES = (TARGET, PRED, GROUP)

P_EPS = Param("eps", "float", DICE_EPS, "smoothing added to numerator and denominator", Interval(0, math.inf, "left"))
P_LOGITS = Param("logits", "bool", False, "the prediction is logits: sigmoid (one column) or softmax (C columns)")
P_BG = Param("include_background", "bool", True,
             "false leaves class 0 out of the class average (ignored for a one-channel prediction, as MONAI)")
P_SQUARED = Param("squared", "bool", False, "denominator Σp² + Σg² (soft Dice of V-Net)")
P_AVERAGE = Param("average", "choice", "macro",
                  "macro: mean over classes (with weight: the weighted sum Σ w_c D_c); weighted: Σ a_c D_c with "
                  "a = weight/Σweight, or the class support when no weight",
                  choices=("macro", "weighted"))
P_WEIGHT = Param("weight", "floats", None,
                 "class weights, C numbers (or one per class kept without the background): the weighted sum "
                 "Σ w_c D_c (above 1 when Σ w_c > 1), normalised to sum to 1 with average=weighted")

# the gradient needs the final sums (a second pass); per-image states do not travel yet
SEG_PASSES = (Pass("second", grad=True, why="the gradient of a ratio of sums needs the final sums"),)
SEG_MERGE_NOTE = "per-image states (an image id column bound) cannot be saved to a file yet"

COMMON_CONVENTIONS = (
    "Without a group column the sums run over every pixel of the file (MONAI batch=True); with one "
    "(image_id) each image gets its own loss from its own sums and the value is their unweighted mean "
    "(MONAI batch=False), kept as one row of sums per image: memory O(images × classes). "
    "ε is added to numerator and denominator (MONAI's smooth_nr = smooth_dr default to 1e-5; lossctl's "
    "eps defaults to 1e-6). Sample weights multiply each pixel's terms in every sum. "
    "A one-channel prediction is binary: the foreground is the only class and include_background is "
    "ignored, as MONAI does. Mask values outside {0,1} (binary) or 0..C−1 are input errors. "
    "The gradient g = ∂(N·L)/∂output needs the final sums: a second pass computes it. "
    "The bootstrap resamples rows (or images with a group), never per-row losses: Dice is a ratio of sums."
)

_EXAMPLE_IMAGE_ID_MASK_PROB = (  # the examples' data (a test runs every example)
    "image_id,mask,prob\n"
    "img1,1,0.9\n"
    "img1,1,0.7\n"
    "img1,0,0.2\n"
    "img1,0,0.1\n"
    "img2,0,0.3\n"
    "img2,1,0.6\n"
    "img2,0,0.05\n"
    "img2,0,0.1\n"
)

_EXAMPLE_IMAGE_ID_MASK_PROB_0 = (  # the examples' data (a test runs every example)
    "image_id,mask,prob_0,prob_1,prob_2\n"
    "1,0,0.8,0.1,0.1\n"
    "1,1,0.2,0.7,0.1\n"
    "1,2,0.1,0.2,0.7\n"
    "1,0,0.6,0.3,0.1\n"
    "2,0,0.7,0.2,0.1\n"
    "2,2,0.2,0.2,0.6\n"
    "2,1,0.3,0.5,0.2\n"
    "2,0,0.9,0.05,0.05\n"
)


SPEC_DICE = LossSpec(
    name="dice", task=SEG, roles=ROLES,
    params=(P_EPS, P_SQUARED, P_LOGITS, P_AVERAGE, P_BG, P_WEIGHT),
    factory=lambda p, ctx: SegmentationState(DiceKernel(p, ctx), ctx),
    properties=Properties(
        takes=("probability", "logit"), minimiser="overlap", imbalance="yes",
        formula="per class c: D_c = 1 − (2Σᵢpᵢ꜀gᵢ꜀ + ε)/(Σᵢpᵢ꜀ + Σᵢgᵢ꜀ + ε) (squared: Σp² + Σg²); L = mean_c D_c (with weight: Σ_c w_c D_c)",
        gradient="∂(N·D_c)/∂pⱼ = −N[2gⱼ(S + ε) − (2I + ε)·∂P/∂pⱼ]/(S + ε)², S = P + G, I = Σpg "
                 "(∂P/∂pⱼ = 1, or 2pⱼ when squared; the ε terms kept); times the class weight; chained through "
                 "sigmoid/softmax with logits",
        convex=False, differentiable="everywhere (for ε > 0)", robust="bounded-influence",
        estimates="overlap (F1 / Dice coefficient) between the soft prediction and the mask",
        output="probability map (per-pixel class probabilities)", cost="low",
        use_when="segmentation with a small foreground (class imbalance): Dice ignores the many easy background pixels",
        avoid_when="you need calibrated probabilities, or images where the object is often absent (the loss is then ≈0 or ≈1, with a noisy gradient)",
        references=("monai.losses.DiceLoss(smooth_nr=eps, smooth_dr=eps, batch=True)", "Milletari et al. 2016 (V-Net)"),
        conventions=COMMON_CONVENTIONS + " With weight the value is the weighted sum Σ_c w_c D_c; "
        "average=weighted normalises the weights to sum to 1 (a weighted mean), and without weight uses the class "
        "support. MONAI's weight multiplies each class's loss before its plain mean: Σ_c w_c D_c / C. "
        "The gradient keeps the ε terms that the form usually quoted drops.",
        outlier_note="bounded: a pixel's gradient is at most about 2/(S + ε) per unit of N",
    ),
    default_for=(SEG,), row_mean=False, passes=SEG_PASSES, merges_grouped=False, merge_note=SEG_MERGE_NOTE,
    summary="Dice loss (soft Dice, per class then averaged)",
    example=heredoc("lossctl eval - -l dice --grad", _EXAMPLE_IMAGE_ID_MASK_PROB),
)

SPEC_GENERALIZED_DICE = LossSpec(
    name="generalized_dice", task=SEG, roles=ROLES,
    params=(P_EPS, P_LOGITS, P_BG),
    factory=lambda p, ctx: SegmentationState(GeneralizedDiceKernel(p, ctx), ctx),
    properties=Properties(
        takes=("probability", "logit"), minimiser="overlap", imbalance="yes",
        formula="L = 1 − (2Σ_c w_c Σᵢpᵢ꜀gᵢ꜀ + ε)/(Σ_c w_c Σᵢ(pᵢ꜀ + gᵢ꜀) + ε), w_c = 1/(Σᵢgᵢ꜀)²",
        gradient="∂(N·L)/∂pⱼ꜀ = −N w_c(2gⱼ꜀·den − num)/den² (w_c depends on the mask only)",
        convex=False, differentiable="everywhere (for ε > 0)", robust="bounded-influence",
        estimates="a class-size-weighted overlap: every class counts about equally, whatever its area",
        output="probability map (per-pixel class probabilities)", cost="low",
        use_when="multi-class segmentation with very unequal class areas (small structures next to large ones)",
        avoid_when="a class is often absent: its weight is then borrowed from the largest finite one",
        references=("monai.losses.GeneralizedDiceLoss(w_type='square')", "Sudre et al. 2017"),
        conventions=COMMON_CONVENTIONS + " A class absent from the target (Σg_c = 0, weight 1/0) gets the largest "
        "finite weight, as MONAI does; if every class is absent all weights are 0 and the loss is 0. "
        "ε is not scaled by the weights: with large images w_c(P_c + G_c) is small and ε counts (as in MONAI).",
        outlier_note="bounded",
    ),
    default_for=(SEG,), row_mean=False, passes=SEG_PASSES, merges_grouped=False, merge_note=SEG_MERGE_NOTE,
    summary="generalized Dice loss (class weights 1/area²)",
    example=heredoc("lossctl eval - -l generalized_dice", _EXAMPLE_IMAGE_ID_MASK_PROB_0),
)

SPEC_DICE_BCE = LossSpec(
    name="dice_bce", task=SEG, roles=ROLES,
    params=(
        Param("alpha", "float", 0.5, "weight of the Dice part; 1 − alpha weighs the BCE part", Interval(0, 1, "both")),
        P_EPS, P_SQUARED, P_LOGITS, P_AVERAGE, P_BG, P_WEIGHT,
        Param("bce_eps", "float", EPS, "probabilities are clipped to [bce_eps, 1 − bce_eps] in the BCE log",
              Interval(0, 0.5, "neither")),
        Param("pos_weight", "float", 1.0, "weight of the positive term of the BCE (binary only)", Interval(0, math.inf)),
    ),
    factory=lambda p, ctx: SegmentationState(DiceBCEKernel(p, ctx), ctx),
    properties=Properties(
        takes=("probability", "logit"), minimiser="overlap", imbalance="yes",
        formula="L = α·Dice + (1 − α)·BCE; BCE = mean over pixels of −[w₊g log p + (1 − g) log(1 − p)] "
                "(cross-entropy −Σ_c g_c log p_c for C classes)",
        gradient="α × the Dice gradient + (1 − α)·N·wᵢ∂ℓᵢ/∂pᵢ/Σw; with logits ∂ℓ/∂z = w₊g(σ − 1) + (1 − g)σ "
                 "(softmax − g for C classes)",
        convex=False, differentiable="everywhere (for ε > 0)", robust="bounded-influence",
        estimates="overlap, with BCE keeping the pixel probabilities calibrated",
        output="probability map (per-pixel class probabilities)", cost="low",
        use_when="small foreground, when Dice alone trains unstably: the BCE part gives every pixel a smooth gradient",
        avoid_when="a pure overlap score is wanted",
        references=("monai.losses.DiceCELoss", "Isensee et al. 2021 (nnU-Net: Dice + CE)"),
        conventions=COMMON_CONVENTIONS + " The BCE part uses the same logits flag and clips probabilities to "
        "[bce_eps, 1 − bce_eps] (default machine ε, as classification's bce); for C > 1 classes it is the "
        "cross-entropy over all classes (include_background applies to the Dice part only, as in MONAI's "
        "DiceCELoss). With a group, each image's loss is α·Dice_image + (1 − α)·BCE_image and the value is "
        "their mean. The BCE gradient is taken at the clipped probability.",
        outlier_note="the BCE part grows without bound as a confident pixel is wrong",
    ),
    default_for=(SEG,), row_mean=False, passes=SEG_PASSES, merges_grouped=False, merge_note=SEG_MERGE_NOTE,
    summary="Dice + binary cross-entropy",
    example=heredoc("lossctl eval - -l dice_bce:alpha=0.7 --grad", _EXAMPLE_IMAGE_ID_MASK_PROB),
)

SPEC_TVERSKY = LossSpec(
    name="tversky", task=SEG, roles=ROLES,
    params=(
        Param("alpha", "float", 0.5, "weight of false positives Σp(1 − g)", Interval(0, math.inf, "left")),
        Param("beta", "float", 0.5, "weight of false negatives Σ(1 − p)g", Interval(0, math.inf, "left")),
        P_EPS, P_LOGITS, P_BG,
    ),
    factory=lambda p, ctx: SegmentationState(TverskyKernel(p, ctx), ctx),
    properties=Properties(
        takes=("probability", "logit"), minimiser="overlap", imbalance="yes",
        formula="per class: 1 − (TP + ε)/(TP + α·FP + β·FN + ε), TP = Σpg, FP = Σp(1 − g), FN = Σ(1 − p)g; macro mean",
        gradient="∂(N·L_c)/∂pⱼ = −N[gⱼ·den − num·(gⱼ + α(1 − gⱼ) − βgⱼ)]/den² / C",
        convex=False, differentiable="everywhere (for ε > 0)", robust="bounded-influence",
        estimates="a Tversky index: α = β = 0.5 is Dice, α = β = 1 is Jaccard (IoU) (at ε = 0)",
        output="probability map (per-pixel class probabilities)", cost="low",
        use_when="small lesions where a miss costs more than a false alarm: raise β above α (e.g. α 0.3, β 0.7)",
        avoid_when="both error types cost the same (use dice)",
        references=("monai.losses.TverskyLoss", "Salehi et al. 2017"),
        conventions=COMMON_CONVENTIONS + " At α = β = 0.5, tversky with eps ε equals dice with eps 2ε "
        "((TP + ε)/(TP + ½FP + ½FN + ε) = (2I + 2ε)/(P + G + 2ε)); MONAI's TverskyLoss has the same form.",
        outlier_note="bounded",
    ),
    row_mean=False, passes=SEG_PASSES, merges_grouped=False, merge_note=SEG_MERGE_NOTE,
    summary="Tversky loss (weighted false positives / negatives)",
    example=heredoc("lossctl eval - -l tversky:alpha=0.3,beta=0.7", _EXAMPLE_IMAGE_ID_MASK_PROB),
)


# every loss of this family, in the order `lossctl list` shows them (lossctl.losses.ALL)
LOSSES: tuple[LossSpec, ...] = (
    SPEC_DICE,
    SPEC_GENERALIZED_DICE,
    SPEC_DICE_BCE,
    SPEC_TVERSKY,
)

__all__ = [
    "dice", "dice_grad", "generalized_dice", "generalized_dice_grad", "tversky", "tversky_grad",
    "dice_bce", "dice_bce_grad", "DiceKernel", "GeneralizedDiceKernel", "TverskyKernel", "DiceBCEKernel",
    "SegmentationState",
]
