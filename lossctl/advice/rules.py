"""The selection guides as data: one rule per line of the source document's guides.

A rule has a condition on the evidence (and on ``--goal``), the losses it favours
with a number of points, optionally a test on a loss's registry properties that
rules the loss out (a trap), the reason it gives (a template that quotes the
measured figures) and an ``explain`` text. A rule may name the loss its guide line
names; which losses exist and what they take or estimate is read from the registry.

How rules combine (stated in ``SCORING``):

* every rule whose task matches and whose condition holds *fires*;
* a loss's score is the sum of the points of the fired rules that favour it;
* a loss that a fired rule rules out is removed, whatever its score, and listed
  under ``ruled_out`` with the reason;
* the recommendations are the losses with a positive score, highest first; ties go
  to the loss declared first in the registry (its order is fixed), so the ranking is
  a function of the evidence alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from lossctl import registry

SCORING = (
    "Each fired rule adds its points to the losses it favours; a loss a fired rule rules out is dropped "
    "(listed under ruled_out with the reason); the rest with a positive score are ranked by score, ties "
    "broken by the registry's declaration order."
)

# thresholds, named once (the explain texts quote them)
OUTLIER_SHARE = 0.01  # beyond 3.5 robust SDs: 0.05% for Gaussian noise
GROSS_K = 10.0  # "gross" outliers: beyond 10 robust SDs (about 1e-4 even for Student-t with 5 df)
GROSS_SHARE = 0.005
KURTOSIS = 1.0  # excess kurtosis above which the tails are called heavy
QUARTILE_SKEW = 0.1  # |Bowley skewness| above which the residuals are called skewed
# ... or three standard errors of the figure on Gaussian noise of n rows, whichever is larger:
# sd(excess kurtosis) = sqrt(24/n); sd(Bowley skewness) = 1.35/sqrt(n) (Kim & White 2004:
# variance 1.8421/n; 1.348 measured on 20,000 normal samples). Without it, 44% of Gaussian
# samples of 111 rows would be called skewed.
NOISE_SDS = 3.0
IMBALANCE = 10.0  # majority:minority ratio from which classes are imbalanced
BALANCED = 3.0  # below it, classes are balanced (focal is a trap)
SEPARABLE_AUC = 0.99
FG_IMBALANCED = 0.1  # foreground share below it (or above 1 − it): imbalanced mask
FG_BALANCED = (0.4, 0.6)  # a 50/50 mask: Dice is a trap
SMALL_IMAGE_FG = 0.01  # an image whose foreground is below 1% holds small objects
SMALL_IMAGE_SHARE = 0.25  # ... when at least a quarter of the images are like that
NO_POSITIVE_SHARE = 0.5

GOALS = {
    "intervals": ("regression",),
    "margin": ("binary", "multiclass"),
    "boosting": ("binary", "multiclass"),
    "quality": ("metric",),
    "simple": ("metric",),
    "small-objects": ("segmentation",),
    "vae": ("distribution",),
    "distillation": ("distribution",),
}

CLS = ("binary", "multiclass")


@dataclass(frozen=True)
class Rule:
    id: str
    tasks: tuple[str, ...]
    guide: str  # the line of the source document's guide it applies
    when: Callable[[dict[str, Any]], bool]
    reason: str  # a template on the evidence figures
    explain: str
    favours: tuple[tuple[str, float], ...] = ()
    # a test on a loss's registry entry: True rules the loss out (a trap)
    rules_out: Callable[[registry.LossSpec, dict[str, Any]], bool] | None = None
    trap: str = ""  # the reason given for each loss ruled out ({loss} is its name)
    standard: bool = False  # its first favoured loss is the task's standard (the empirical check's reference)
    # registry properties quoted for each favoured loss after the reason ("robust", "minimiser", …)
    cites: tuple[str, ...] = ()


def _g(e: dict[str, Any], key: str, default: float = math.nan) -> float:
    v = e.get(key)
    return default if v is None else v


def kurtosis_limit(e: dict[str, Any]) -> float:
    n = max(_g(e, "n", 1), 1)
    return max(KURTOSIS, NOISE_SDS * math.sqrt(24.0 / n))


def skew_limit(e: dict[str, Any]) -> float:
    n = max(_g(e, "n", 1), 1)
    return max(QUARTILE_SKEW, NOISE_SDS * 1.35 / math.sqrt(n))


def _goal(e: dict[str, Any], g: str) -> bool:
    return e.get("goal") == g


def _takes(spec: registry.LossSpec, kind: str) -> bool:
    return kind in spec.properties.takes


RULES: tuple[Rule, ...] = (
    # ---------------------------------------------------------------- regression
    Rule(
        "regression.baseline", ("regression",),
        "practice: start from MSE as the baseline",
        lambda e: True,
        "MSE is the regression baseline the guide starts from",
        "Always fires: MSE gets 1 point, so it is listed (last, when nothing argues for it) as the "
        "baseline every other recommendation is compared with.",
        favours=(("mse", 1.0),),
        standard=True,
    ),
    Rule(
        "regression.clean", ("regression",),
        "clean data, precision matters → MSE",
        lambda e: (_g(e, "outlier_share", 0) <= OUTLIER_SHARE and abs(_g(e, "kurtosis", 0)) <= kurtosis_limit(e)
                   and abs(_g(e, "quartile_skewness", 0)) <= skew_limit(e)),
        "clean {of}: {outlier_share:.2%} beyond 3.5 robust SDs (Gaussian: 0.05%), excess kurtosis "
        "{kurtosis:.2f}, quartile skewness {quartile_skewness:.2f} → MSE, the efficient choice",
        f"Fires when at most {OUTLIER_SHARE:.0%} of the residuals lie beyond 3.5 robust SDs (1.4826·MAD), "
        f"|excess kurtosis| ≤ max({KURTOSIS:g}, 3·√(24/n)) and |quartile skewness| ≤ max({QUARTILE_SKEW:g}, "
        "3·1.35/√n) (the limits noise of n Gaussian rows stays within): +3 to mse.",
        favours=(("mse", 3.0),),
    ),
    Rule(
        "regression.outliers", ("regression",),
        "outliers, robustness needed → MAE (no tuning) or Huber (δ to tune)",
        lambda e: _g(e, "gross_outlier_share", 0) > GROSS_SHARE,
        "{gross_outlier_share:.1%} of {of} lie beyond 10 robust SDs (gross outliers) and the worst 1% of rows "
        "carry {worst1pct_mse_share:.0%} of the MSE → a robust loss: Huber (δ from the MAD) or MAE",
        f"Fires when more than {GROSS_SHARE:.1%} of the residuals lie beyond {GROSS_K:g} robust SDs: "
        "+3 to huber (robust and still efficient on the clean rows), +2 to mae (no parameter).",
        favours=(("huber", 3.0), ("mae", 2.0)),
        cites=('robust',),
    ),
    Rule(
        "regression.heavy_tails", ("regression",),
        "practice: look at the residuals; if the tails are heavy, consider MAE/Huber",
        lambda e: (_g(e, "gross_outlier_share", 0) <= GROSS_SHARE
                   and (_g(e, "outlier_share", 0) > OUTLIER_SHARE or _g(e, "kurtosis", 0) > kurtosis_limit(e))),
        "heavy tails without gross outliers: {outlier_share:.1%} of {of} beyond 3.5 robust SDs "
        "(Gaussian: 0.05%), excess kurtosis {kurtosis:.2f} → Huber keeps MSE's efficiency on the body "
        "and bounds the tails' pull",
        f"Fires when no more than {GROSS_SHARE:.1%} lie beyond {GROSS_K:g} robust SDs but more than "
        f"{OUTLIER_SHARE:.0%} lie beyond 3.5, or the excess kurtosis exceeds max({KURTOSIS:g}, 3·√(24/n)): "
        "+3 to huber, +1 to mae.",
        favours=(("huber", 3.0), ("mae", 1.0)),
        cites=('robust',),
    ),
    Rule(
        "regression.skewed", ("regression",),
        "practice: check the residual distribution (MSE fits the conditional mean, MAE the median)",
        lambda e: abs(_g(e, "quartile_skewness", 0)) > skew_limit(e),
        "skewed {of}: quartile skewness {quartile_skewness:.2f}, skewness {skewness:.2f}, the mean "
        "{mean_minus_median:+.2f} robust SDs from the median → MAE fits the conditional median, which "
        "the skew does not drag",
        f"Fires when |Bowley quartile skewness| > max({QUARTILE_SKEW:g}, 3·1.35/√n), beyond what noise of "
        "n Gaussian rows reaches: +3 to mae (the median is the typical "
        "value; the mean follows the long tail).",
        favours=(("mae", 3.0),),
        cites=('minimiser',),
    ),
    Rule(
        "regression.intervals", ("regression",),
        "uncertainty quantification needed → quantile loss",
        lambda e: _goal(e, "intervals"),
        "--goal intervals: a central {coverage:.0%} interval needs the quantile loss at the pair of τ",
        "Fires with --goal intervals (or --coverage): +6 to quantile (two entries, the τ pair of the "
        "central interval) and to interval when lower/upper columns are bound.",
        favours=(("quantile", 6.0), ("interval", 6.0)),
    ),
    Rule(
        "regression.interval_columns", ("regression",),
        "uncertainty quantification → quantile loss (here, the two quantiles as an interval)",
        lambda e: e.get("has_interval", False),
        "the data holds lower/upper bounds: score them as a central {coverage:.0%} interval (the pinball "
        "loss of each bound, with the coverage beside it)",
        "Fires when lower/upper columns are bound: +6 to interval, with lo/hi from --coverage (0.9 by default).",
        favours=(("interval", 6.0),),
    ),
    # ---------------------------------------------------------------- classification
    Rule(
        "classification.standard", CLS,
        "standard classification → cross-entropy (the default in deep learning)",
        lambda e: True,
        "standard classification → cross-entropy, the guide's default",
        "Always fires: +3 to the task's cross-entropy (bce for binary, cross_entropy for multiclass).",
        favours=(("cross_entropy", 3.0),),
        standard=True,
    ),
    Rule(
        "classification.imbalance", CLS,
        "extreme class imbalance → focal loss, but try weighted cross-entropy first",
        lambda e: _g(e, "imbalance_ratio", 1) >= IMBALANCE,
        "class imbalance {imbalance_ratio:.0f}:1 (minority {minority_share:.2%} of rows) → weighted "
        "cross-entropy first, then focal",
        f"Fires when the majority:minority ratio is at least {IMBALANCE:g}: +2 to cross-entropy (with "
        "class weights derived from the counts), +1.5 to focal (α, γ derived).",
        favours=(("cross_entropy", 2.0), ("focal", 1.5)),
        cites=('imbalance',),
    ),
    Rule(
        "classification.balanced_focal", CLS,
        "(focal is for extreme imbalance)",
        lambda e: _g(e, "imbalance_ratio", 1) < BALANCED,
        "",
        f"Fires when the majority:minority ratio is below {BALANCED:g}: rules out losses built for "
        "imbalance by their form (registry: imbalance = yes).",
        rules_out=lambda s, e: s.properties.imbalance == "yes",
        trap="focal on balanced classes (ratio {imbalance_ratio:.2f}:1): nothing to rebalance; its "
             "down-weighting of easy rows only distorts the probabilities",
    ),
    Rule(
        "classification.margin", CLS,
        "max-margin interpretation (SVM) → hinge loss",
        lambda e: _goal(e, "margin"),
        "--goal margin: a max-margin (SVM-style) classifier → hinge",
        "Fires with --goal margin: +6 to the task's hinge loss (a stated goal outranks the standard).",
        favours=(("hinge", 6.0),),
    ),
    Rule(
        "classification.separable", CLS,
        "hinge: linearly separable or nearly separable data",
        lambda e: _g(e, "roc_auc", 0) >= SEPARABLE_AUC and e.get("score_kind") in ("margin", "logit"),
        "nearly separable (ROC AUC {roc_auc:.3f}) with unbounded scores → hinge's max margin applies",
        f"Fires when ROC AUC ≥ {SEPARABLE_AUC:g} on unbounded scores (margins or logits): +1 to hinge.",
        favours=(("hinge", 1.0),),
    ),
    Rule(
        "classification.boosting", CLS,
        "ensembles (AdaBoost) → exponential loss",
        lambda e: _goal(e, "boosting"),
        "--goal boosting: AdaBoost's loss is the exponential loss",
        "Fires with --goal boosting: +6 to exponential (a stated goal outranks the standard).",
        favours=(("exponential", 6.0),),
    ),
    Rule(
        "classification.probabilities", CLS,
        "(hinge and exponential take decision values: SVM / AdaBoost scores)",
        lambda e: e.get("score_kind") == "probability",
        "",
        "Fires when every score lies in [0, 1] (rows summing to 1): rules out losses that do not take "
        "probabilities (registry: takes).",
        rules_out=lambda s, e: not _takes(s, "probability"),
        trap="{loss} given probabilities (scores in [{score_min:.3g}, {score_max:.3g}]): it expects "
             "decision values; on p ∈ [0, 1] the margin y·f never exceeds 1, so every row keeps a loss",
    ),
    # ---------------------------------------------------------------- segmentation
    Rule(
        "segmentation.baseline", ("segmentation",),
        "practice: start from the task's standard loss (per-pixel cross-entropy)",
        lambda e: True,
        "per-pixel cross-entropy is the baseline the guide starts from",
        "Always fires: +1 to per-pixel cross-entropy (bce for a 0/1 mask).",
        favours=(("cross_entropy", 1.0),),
        standard=True,
    ),
    Rule(
        "segmentation.balanced", ("segmentation",),
        "balanced classes → cross-entropy",
        lambda e: FG_IMBALANCED <= _g(e, "foreground_share", 0) <= 1 - FG_IMBALANCED
        and _g(e, "smallest_class_share", 1) >= FG_IMBALANCED / 2,
        "balanced mask: {foreground_share:.1%} foreground → per-pixel cross-entropy",
        f"Fires when the foreground share lies in [{FG_IMBALANCED:g}, {1 - FG_IMBALANCED:g}]: +3 to cross-entropy.",
        favours=(("cross_entropy", 3.0),),
    ),
    Rule(
        "segmentation.dice_5050", ("segmentation",),
        "(Dice is for imbalanced classes)",
        lambda e: FG_BALANCED[0] <= _g(e, "foreground_share", 0) <= FG_BALANCED[1],
        "",
        f"Fires when the foreground share lies in [{FG_BALANCED[0]:g}, {FG_BALANCED[1]:g}]: rules out the "
        "overlap losses (registry: minimiser = overlap).",
        rules_out=lambda s, e: s.properties.minimiser == "overlap",
        trap="{loss} on a {foreground_share:.0%} foreground mask: the classes are balanced, so Dice's "
             "rebalancing buys nothing and its ratio gradient is less stable than cross-entropy's",
    ),
    Rule(
        "segmentation.imbalance", ("segmentation",),
        "class imbalance → Dice loss or Dice+BCE",
        lambda e: (_g(e, "foreground_share", 0.5) < FG_IMBALANCED or _g(e, "foreground_share", 0.5) > 1 - FG_IMBALANCED
                   or _g(e, "smallest_class_share", 1) < FG_IMBALANCED / 2),
        "imbalanced mask: {foreground_share:.2%} foreground → Dice (or Dice+BCE, which keeps the "
        "pixel probabilities calibrated)",
        f"Fires when the foreground share is below {FG_IMBALANCED:g} (or above {1 - FG_IMBALANCED:g}), or "
        "a class covers under 5%: +3 to dice and dice_bce.",
        favours=(("dice", 3.0), ("dice_bce", 3.0)),
        cites=('imbalance',),
    ),
    Rule(
        "segmentation.small_objects", ("segmentation",),
        "small objects → focal loss or generalized Dice",
        lambda e: (_g(e, "small_object_image_share", 0) >= SMALL_IMAGE_SHARE
                   or ("images" not in e and _g(e, "foreground_share", 1) < SMALL_IMAGE_FG)
                   or _g(e, "smallest_class_share", 1) < SMALL_IMAGE_FG),
        "small objects: {small_objects_text} → focal (per pixel) or generalized Dice",
        f"Fires when at least {SMALL_IMAGE_SHARE:.0%} of the images have under {SMALL_IMAGE_FG:.0%} "
        "foreground (or, without image ids, the whole mask has), or when a class covers under 1%: +4 to "
        "focal and generalized_dice.",
        favours=(("focal", 4.0), ("generalized_dice", 4.0)),
        cites=('imbalance',),
    ),
    Rule(
        "segmentation.small_objects_goal", ("segmentation",),
        "small objects → focal loss or generalized Dice",
        lambda e: _goal(e, "small-objects"),
        "--goal small-objects → focal (per pixel) or generalized Dice",
        "Fires with --goal small-objects: +6 to focal and generalized_dice (a stated goal outranks the "
        "standard).",
        favours=(("focal", 6.0), ("generalized_dice", 6.0)),
    ),
    # ---------------------------------------------------------------- metric learning
    Rule(
        "metric.quality", ("metric",),
        "high-quality embeddings → triplet loss with hard-example mining",
        lambda e: _goal(e, "quality") or (e.get("layout") in ("labelled", "triplets") and not _goal(e, "simple")),
        "{metric_quality_text} → triplet loss with mining",
        "Fires with --goal quality, or on labelled embeddings / triplets without --goal simple: +4 to triplet "
        "(the mined form on labelled rows).",
        favours=(("triplet", 4.0),),
    ),
    Rule(
        "metric.simple", ("metric",),
        "simple similarity learning → contrastive loss",
        lambda e: _goal(e, "simple") or (e.get("layout") == "pairs" and not _goal(e, "quality")),
        "{metric_simple_text} → contrastive loss",
        "Fires with --goal simple, or on pairs without --goal quality: +4 to contrastive.",
        favours=(("contrastive", 4.0),),
    ),
    Rule(
        "metric.normalise", ("metric",),
        "L2-normalise the embeddings",
        lambda e: not e.get("normalised", True),
        "embedding norms vary (mean {embedding_norm_mean:.3g}, CV {embedding_norm_cv:.2f}): L2-normalise "
        "them, which fixes the distance range and makes the margin transferable",
        "Fires when the embeddings are not unit vectors: a reason (no points) on the embedding losses, and "
        "normalize=true where the loss has it.",
        favours=(("triplet", 0.0), ("contrastive", 0.0)),
    ),
    Rule(
        "metric.no_positives", ("metric",),
        "(triplets need a positive for each anchor)",
        lambda e: _g(e, "anchors_without_positive", 0) > NO_POSITIVE_SHARE,
        "",
        f"Fires when over {NO_POSITIVE_SHARE:.0%} of the rows are alone in their class: rules out batch-mined "
        "triplets.",
        rules_out=lambda s, e: bool(s.variant_of),
        trap="{loss}: {anchors_without_positive:.0%} of rows are alone in their class, so most anchors "
             "have no positive to mine",
    ),
    # ---------------------------------------------------------------- distributions
    Rule(
        "distribution.standard", ("distribution",),
        "distribution matching → KL divergence",
        lambda e: e.get("layout") == "pq",
        "matching a target distribution P → KL(P‖Q), the standard",
        "Fires on P/Q distribution rows: +3 to kl.",
        favours=(("kl", 3.0),),
        standard=True,
    ),
    Rule(
        "distribution.q_zeros", ("distribution",),
        "(KL(P‖Q) is infinite where Q = 0 < P)",
        lambda e: _g(e, "q_zero_rows", 0) > 0,
        "Q is 0 where P > 0 in {q_zero_rows} rows ({q_zero_share:.2%}): KL is infinite there → JS or TV, "
        "which stay finite",
        "Fires when some Q_c = 0 < P_c: rules out kl and gives +4 to js and +3 to tv (wasserstein for "
        "sample columns).",
        favours=(("js", 4.0), ("tv", 3.0)),
        rules_out=lambda s, e: s.name == "kl",
        trap="kl with zeros of Q where P > 0 ({q_zero_rows} rows, first at row {q_zero_first_row}): "
             "KL(P‖Q) = +inf there",
    ),
    Rule(
        "distribution.samples", ("distribution",),
        "(two samples, not distribution rows: the Wasserstein distance)",
        lambda e: e.get("layout") == "samples",
        "target and prediction are samples of two distributions → W₁ compares them directly",
        "Fires on one sample column each for target and prediction: +3 to wasserstein.",
        favours=(("wasserstein", 3.0),),
    ),
    Rule(
        "distribution.vae", ("distribution",),
        "variational autoencoder → KL divergence as the regulariser",
        lambda e: _goal(e, "vae") or e.get("layout") == "vae",
        "a VAE's posterior N(μ, σ²) → KL to the prior N(0, I) as the regulariser ({vae_text})",
        "Fires with --goal vae or on mu/logvar columns: +5 to vae_kl.",
        favours=(("vae_kl", 5.0),),
    ),
    Rule(
        "distribution.distillation", ("distribution",),
        "knowledge distillation → KL divergence with a temperature",
        lambda e: _goal(e, "distillation") or e.get("layout") == "distill",
        "distillation → KL with a temperature (teacher entropy {teacher_entropy_norm:.0%} of the maximum "
        "at T = 1; teacher and student agree on {agreement:.1%} of rows)",
        "Fires with --goal distillation or on teacher/student logits: +5 to distill, T derived.",
        favours=(("distill", 5.0),),
    ),
)


class _Figures(dict):
    """Evidence for str.format: a missing or null figure prints as n/a."""

    def __missing__(self, key: str) -> Any:
        return _NA()


class _NA:
    def __format__(self, spec: str) -> str:
        return "n/a"


def render(template: str, e: dict[str, Any], **extra: Any) -> str:
    vals = _Figures({k: (v if v is not None else _NA()) for k, v in {**e, **extra}.items()})
    return template.format_map(vals)


def explain(task: str | None = None) -> list[dict[str, str]]:
    """Every rule as text: its id, the guide line, and how it scores."""
    return [{"rule": r.id, "tasks": ", ".join(r.tasks), "guide": r.guide, "explain": r.explain}
            for r in RULES if task is None or task in r.tasks]


def fired(task: str, e: dict[str, Any]) -> list[Rule]:
    return [r for r in RULES if task in r.tasks and r.when(e)]
