"""Parameters derived from the evidence, each with the formula that gave it.

Every function takes the evidence figures (and the request's goal/coverage) and
returns ``(params, derivation)``: the parameter values and, per parameter, one line
saying how it was derived, quoting the figures it used.
"""
from __future__ import annotations

from typing import Any

Derived = tuple[dict[str, Any], dict[str, str]]

HUBER_EFFICIENCY = 1.345  # δ = 1.345σ: 95% efficiency at the Gaussian (Huber 1964)
DEFAULT_COVERAGE = 0.9
FOCAL_GAMMA = 2.0  # Lin et al. 2017: γ = 2 worked best
MIN_TEMPERATURE_ENTROPY = 0.5
NOISY_NEIGHBOURS = 0.3  # 1-NN error above which batch-hard mining would chase label noise  # softened teacher: at least half the maximal entropy


def _r(x: float, nd: int = 4) -> float:
    return float(f"{x:.{nd}g}")


def huber(ev: dict[str, Any], ctx: dict[str, Any]) -> Derived:
    mad = ev.get("residual_mad", ev.get("target_mad")) or 0.0
    delta = HUBER_EFFICIENCY * mad / 0.6745
    if not delta > 0:  # most residuals equal: fall back on the standard deviation
        sd = ev.get("residual_std", ev.get("target_std")) or 0.0
        if not sd > 0:
            return {"delta": 1.0}, {"delta": "δ = 1 (the default): every residual is equal, there is no scale"}
        delta = HUBER_EFFICIENCY * sd
        return {"delta": _r(delta)}, {"delta": f"δ = 1.345 · SD = 1.345 · {sd:.4g} = {delta:.4g} (the MAD is 0)"}
    return {"delta": _r(delta)}, {
        "delta": f"δ = 1.345 · MAD / 0.6745 = 1.345 · {mad:.4g} / 0.6745 = {delta:.4g} "
                 "(1.345 robust SDs: 95% of MSE's efficiency on Gaussian noise, bounded pull beyond)"}


def quantile_pair(coverage: float) -> list[Derived]:
    lo, hi = (1 - coverage) / 2, (1 + coverage) / 2
    text = f"a central {coverage:g} interval: τ_lo = (1 − C)/2 = {lo:.4g}, τ_hi = (1 + C)/2 = {hi:.4g}"
    return [({"tau": _r(lo)}, {"tau": text + " (lower bound)"}), ({"tau": _r(hi)}, {"tau": text + " (upper bound)"})]


def interval(coverage: float) -> Derived:
    lo, hi = (1 - coverage) / 2, (1 + coverage) / 2
    return {"lo": _r(lo), "hi": _r(hi)}, {"lo": f"(1 − C)/2 with C = {coverage:g}", "hi": f"(1 + C)/2 with C = {coverage:g}"}


def pos_weight(ev: dict[str, Any]) -> Derived:
    c = ev["class_counts"]
    neg, pos = list(c.values())[0], list(c.values())[1]
    w = neg / pos if pos else 1.0
    return {"pos_weight": _r(w)}, {"pos_weight": f"pos_weight = n_neg / n_pos = {neg} / {pos} = {w:.4g} "
                                                 "(each class then carries equal total weight)"}


def class_weights(ev: dict[str, Any]) -> Derived:
    c = ev["class_counts"]
    n, k = sum(c.values()), len(c)
    w = tuple(_r(n / (k * v)) if v else 0.0 for v in c.values())
    return {"weight": w}, {"weight": f"w_c = N / (C · n_c) with N = {n}, C = {k}, n_c = {list(c.values())} "
                                     "(scikit-learn's 'balanced')"}


def focal(ev: dict[str, Any], binary: bool) -> Derived:
    gamma = FOCAL_GAMMA
    why_g = "γ = 2 (Lin et al. 2017)"
    easy = ev.get("easy_share")
    if easy is not None and easy < 0.5:
        gamma = 1.0
        why_g = (f"γ = 1: only {easy:.1%} of rows are easy (p_t > 0.9), so there is little easy mass "
                 "for γ = 2 to remove")
    elif easy is not None:
        why_g += f"; {easy:.1%} of rows are easy (p_t > 0.9), the mass the modulating factor removes"
    c = list(ev["class_counts"].values())
    n = sum(c)
    f = [v / n for v in c]
    e = 1.0 / (1.0 + gamma)
    if binary:
        a = (1 - f[1]) ** e / ((1 - f[1]) ** e + f[1] ** e) if 0 < f[1] < 1 else 0.5
        text = (f"α = f₋^(1/(1+γ)) / (f₋^(1/(1+γ)) + f₊^(1/(1+γ))) with f₊ = {f[1]:.4g}: inverse-frequency "
                f"weighting, tempered because the (1 − p_t)^γ factor already does part of the balancing "
                f"(γ = 0 gives α = f₋) = {a:.4g}")
        return {"gamma": gamma, "alpha": _r(a)}, {"gamma": why_g, "alpha": text}
    inv = [(1 / x) ** e if x > 0 else 0.0 for x in f]
    s = sum(inv)
    alpha = tuple(_r(v / s) for v in inv)
    return {"gamma": gamma, "alpha": alpha}, {
        "gamma": why_g,
        "alpha": "α_c = f_c^(−1/(1+γ)) / Σ_k f_k^(−1/(1+γ)): inverse-frequency weights tempered by γ, summing to 1"}


def triplet(ev: dict[str, Any], mined: bool) -> Derived:
    gap = ev.get("distance_gap")
    params: dict[str, Any] = {}
    der: dict[str, str] = {}
    if gap is not None:
        m = min(1.0, max(0.2, gap * gap))
        params["margin"] = _r(m)
        der["margin"] = (f"m = clip(gap², 0.2, 1.0) with gap = median d(neg) − median d(pos) = {gap:.4g} on "
                         "L2-normalised embeddings (squared distances: the margin is in their units; the guide's "
                         "usual range is 0.2–1.0)")
    if not ev.get("normalised"):
        params["normalize"] = True
        der["normalize"] = (f"the embeddings' norms vary (mean {ev.get('embedding_norm_mean')}, "
                            f"CV {ev.get('embedding_norm_cv')}): L2-normalise them, as the guide advises")
    if mined:
        noisy = ev.get("nn_other_class_share")
        if noisy is not None and noisy > NOISY_NEIGHBOURS:
            params["mining"] = "semihard"
            der["mining"] = (f"semihard: the nearest neighbour of {noisy:.1%} of rows is of another class "
                             "(overlapping classes or noisy labels); batch-hard mining would chase those rows, "
                             "semi-hard negatives (d_ap < d_an < d_ap + m, FaceNet) stay informative")
        else:
            params["mining"] = "hard"
            der["mining"] = ("hard (batch hard, Hermans et al. 2017), the guide's choice for high-quality "
                             "embeddings" + (f": only {noisy:.1%} of rows have a nearest neighbour of another "
                                             "class, so the hardest pairs are not label noise" if noisy is not None else ""))
    return params, der


def contrastive(ev: dict[str, Any]) -> Derived:
    q = ev.get("pos_distance_q90")
    raw = ev.get("pos_distance_q90_raw")
    if raw is not None and not ev.get("normalised"):
        # contrastive has no normalize option: its margin is in the units of the embeddings as given
        m = 2 * raw
        return {"margin": _r(m)}, {"margin": (
            f"m = 2 · q90 of similar pairs' distance = 2 · {raw:.4g} on the embeddings as given (contrastive "
            "reads them unnormalised; L2-normalise them in the model and the guide's 0.5–2.0 applies)")}
    if q is None:
        return {}, {}
    m = min(2.0, max(0.5, 2 * q))
    return {"margin": _r(m)}, {"margin": f"m = clip(2 · q90 of similar pairs' distance, 0.5, 2.0) = "
                                         f"clip(2 · {q:.4g}) on L2-normalised embeddings (the guide's range 0.5–2.0)"}


def temperature(ev: dict[str, Any]) -> Derived:
    by_t = ev.get("teacher_entropy_by_t") or {}
    for t, h in by_t.items():
        if h is not None and h >= MIN_TEMPERATURE_ENTROPY:
            T = float(t)
            break
    else:
        T = float(list(by_t)[-1]) if by_t else 2.0
    h1 = ev.get("teacher_entropy_norm")
    return {"temperature": T}, {"temperature": (
        f"the smallest T on the grid 1…20 at which the teacher's softened distribution softmax(t/T) has at "
        f"least {MIN_TEMPERATURE_ENTROPY:.0%} of the maximal entropy log C (at T = 1 it has "
        f"{(h1 or 0):.1%}): enough mass on the wrong classes to carry the dark knowledge")}


def coverage_of(ctx: dict[str, Any]) -> float:
    c = ctx.get("coverage")
    return float(c) if c is not None else DEFAULT_COVERAGE
