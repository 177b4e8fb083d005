"""The one method registry: every student method is a `Method` entry in METHODS.

A method has named hyper-parameter defaults (logged in every row and in its config hash),
a `fit(ctx)` that fits its estimators on the estimator data (a labeled V, or out-of-fold
teacher predictions on A: `FitContext`) and returns per-example tensors aligned with U plus
the values to log, and a `loss(batch)` for a batch of U. Two flags say which labels it spends
(`labels_used`): `fits_on_labels` (its fit reads the estimator data's labels) and
`labeled_set` ("A", or "A+V" for a reference that trains its teacher and student on V too).

Adding a method = write its loss (e.g. in slam_bench.losses) and add one entry:

    register_method(Method("mine", defaults={"beta": 0.5},
                           fit=_fit_nothing, loss=lambda b: my_loss(b.logits, b.teacher_probs,
                                                                    beta=b.hp["beta"])))

The suites, the CLI and the leaderboard pick it up from here (list it in a suite's `methods`).

Every student method also has the hyper-parameter `targets` ("soft": the teacher's probability
vectors, the default; "hard": its one-hot argmax), logged and hashed like the others. It only
changes what the loss sees (`Batch.teacher_probs`): `fit` always sees the teacher's soft
probabilities, since the estimators need its confidence (docs/estimators.md).

On a top-K teacher cache (a suite's `teacher_topk`, docs/vocab.md) the teacher's labels are a
`TopKProbs` and a student method trains through its `topk_loss`, which gets the student's
features and output layer instead of logits (`fused_linear_slam_loss`: the N x C logits are
never formed). A method without one needs the dense teacher; its `dense_only` says why, and a
run on a top-K cache refuses it before any training (`check_topk`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional

from slam_bench.estimator_defaults import TRANSITION_SMOOTHING

# The registry imports no torch (annotations are strings): `slam-bench list` reads the names,
# defaults and descriptions without it. The functions that compute import what they use.
if TYPE_CHECKING:
    from torch import Tensor, nn

# What the loss trains on (a hyper-parameter of every student method): the teacher's
# probabilities, or their one-hot argmax.
TARGETS = ("soft", "hard")


# Which labeled set a method trains on (its teacher, where the suite trains one, and its
# student's cross-entropy): A, or A and V together (the reference spending V's labels on
# training instead of on estimators).
LABELED_SETS = ("A", "A+V")


@dataclass(frozen=True)
class FitContext:
    """What a method may fit on. Teacher tensors are float32 on the training device.

    probs_val (n, C) (a TopKProbs on a top-K cache, as probs_u), y_val (n,) int64: the
    estimator data, whose labels exist for fitting
    only: with estimator_data "val" the teacher's probabilities on V and V's labels (n = |V|);
    with "crossfit" out-of-fold teacher probabilities on A and A's labels (n = |A|, see
    slam_bench.pipeline.teacher.crossfit_probs). Empty (0 rows) for a method whose
    `fits_on_labels` is False: what a method does not declare it cannot read.
    probs_u (|U|, C): the teacher's soft labels on U; mc_std_u (|U|, C): std over MC-dropout
    passes ((|U|, 0) on a top-K cache); teacher_features_dim / student_features_dim: penultimate widths (for VID).
    """
    probs_val: Tensor
    y_val: Tensor
    probs_u: Tensor
    mc_std_u: Tensor
    num_classes: int
    teacher_feature_dim: int
    student_feature_dim: int
    hp: Mapping


@dataclass
class Fitted:
    """A fitted method: values to log (`params`), tensors aligned with U (`per_example`, sliced
    per batch), other fitted tensors (`state`), and an optional module trained with the student."""
    params: Dict[str, object] = field(default_factory=dict)
    per_example: Dict[str, Tensor] = field(default_factory=dict)
    state: Dict[str, object] = field(default_factory=dict)
    module: Optional[nn.Module] = None


@dataclass(frozen=True)
class Batch:
    """One batch of U: its indices into U (B,) int64, student logits (B, C) and features (B, F),
    the teacher's labels (B, C) as the method's `targets` asks (soft probabilities or their
    one-hot argmax, see `loss_targets`) and features (B, F_t), the method's per-example
    tensors sliced to the batch.

    On a top-K cache (`Method.topk_loss`): logits is None, teacher_probs a `TopKProbs` (B rows),
    teacher_features (B, 0), head the student's output layer (nn.Linear, weight (C, F)) and
    chunk_rows the rows of logits the fused loss forms at a time."""
    index: Tensor
    logits: Optional[Tensor]
    features: Tensor
    teacher_probs: object
    teacher_features: Tensor
    extra: Mapping[str, Tensor]
    fitted: Fitted
    hp: Mapping
    head: Optional[nn.Module] = None
    chunk_rows: Optional[int] = None


@dataclass(frozen=True)
class Method:
    name: str
    defaults: Mapping = field(default_factory=dict)
    fit: Optional[Callable[[FitContext], Fitted]] = None
    loss: Optional[Callable[[Batch], Tensor]] = None  # None: no student (the teacher row)
    description: str = ""
    # True when `fit` reads the estimator data's labels (y_val): with estimator_data "val"
    # the method then spends |V| labels beyond A.
    fits_on_labels: bool = False
    labeled_set: str = "A"  # LABELED_SETS
    # The loss on a top-K teacher cache (module docstring); None: the method needs the dense
    # teacher, for the reason `dense_only` gives.
    topk_loss: Optional[Callable[[Batch], Tensor]] = None
    dense_only: str = ""

    def __post_init__(self):
        if self.labeled_set not in LABELED_SETS:
            raise ValueError(f"method {self.name!r}: labeled_set must be one of "
                             f"{', '.join(LABELED_SETS)}, got {self.labeled_set!r}")

    def labels_used(self, n_labeled: int, n_val: int, estimator_data: str) -> int:
        """True labels this method's row saw: |A|, plus |V| when it trains on A + V or when
        its fit reads V's labels (estimator_data "val"; "crossfit" reads only A's)."""
        spends_v = self.labeled_set == "A+V" or (self.fits_on_labels and estimator_data == "val")
        return n_labeled + (n_val if spends_v else 0)

    @property
    def trains_student(self) -> bool:
        return self.loss is not None

    def check_topk(self, k: int) -> None:
        """ValueError, saying why, unless this method runs on a top-`k` teacher cache."""
        if self.trains_student and self.topk_loss is None:
            raise ValueError(f"method {self.name!r} cannot run on a top-K teacher cache "
                             f"(teacher_topk = {k}): {self.dense_only}")

    def hparams(self, overrides: Optional[Mapping] = None) -> Dict[str, object]:
        """Defaults (plus `targets` = "soft" for a student method) updated by `overrides`;
        unknown names and unknown `targets` are an error, not silently kept."""
        hp = {**({"targets": "soft"} if self.trains_student else {}), **self.defaults}
        for key, value in (overrides or {}).items():
            if key not in hp:
                raise ValueError(f"method {self.name!r} has no hyper-parameter {key!r}; "
                                 f"expected one of {', '.join(sorted(hp)) or '(none)'}")
            hp[key] = value
        if "targets" in hp and hp["targets"] not in TARGETS:
            raise ValueError(f"method {self.name!r}: targets must be one of {', '.join(TARGETS)}, "
                             f"got {hp['targets']!r}")
        return hp


METHODS: Dict[str, Method] = {}


def register_method(method: Method) -> None:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    return METHODS[name]


def loss_targets(probs_u, hp: Mapping):
    """What the loss trains on: the teacher's soft probabilities (N, C) (or TopKProbs) as
    given, or with hp["targets"] == "hard" their one-hot argmax (N, C) in the same dtype (a
    TopKProbs with K = 1 and probability 1)."""
    if hp.get("targets", "soft") == "soft":
        return probs_u
    import torch

    from slam_bench.vocab.teacher import TopKProbs

    if isinstance(probs_u, TopKProbs):
        return probs_u.hard()

    return torch.nn.functional.one_hot(probs_u.argmax(dim=1), probs_u.shape[1]).to(probs_u.dtype)


# --------------------------------------------------------------------------- shared estimators

# alpha's lower bound, and why it is required. Inside the top-k the
# mixed prediction is q_j = (alpha - s (1 - alpha)) f_j + s (1 - alpha): it rewards the
# student for agreeing with the teacher only while alpha - s (1 - alpha) > 0, i.e. alpha > 1/2
# for s = 1 (`slam`) and alpha > 1/k for s = 1/(k-1) (`slam_normalized`). At or below that
# threshold the optimum moves mass out of the teacher's top-k, so estimated alphas are clipped
# from below to a bound strictly above it. "auto" puts the bound `alpha_auto_margin` above the
# threshold (for k chosen on V): examples whose teacher is no better than that barely move
# the student, and examples above it keep their estimated alpha.
def alpha_threshold(k: int, normalize: bool) -> float:
    """The alpha at which SLaM's mix stops rewarding the teacher's label: 1/2 or 1/k."""
    return 1.0 / k if normalize else 0.5


def resolve_lower_bound(hp: Mapping, k: int, normalize: bool) -> float:
    """hp["alpha_lower_bound"] (a float, or "auto") as a number strictly above the threshold."""
    bound, threshold = hp["alpha_lower_bound"], alpha_threshold(k, normalize)
    if bound == "auto":
        margin = hp["alpha_auto_margin"]
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
                or not 0 < margin < 1 - threshold:
            raise ValueError(f"alpha_auto_margin must be a float in (0, {1 - threshold:g}), "
                             f"got {margin!r}")
        return threshold + float(margin)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not threshold < bound <= 1:
        form = "1/k" if normalize else "1/2"
        raise ValueError(f"alpha_lower_bound must be 'auto' or a float in ({form} = {threshold:.4g}, 1] "
                         f"(k = {k}): at or below {form} SLaM's mix rewards moving mass out of "
                         f"the teacher's top-k; got {bound!r}")
    return float(bound)


def _fit_alpha(ctx: FitContext, lower_bound: float):
    """Isotonic alpha on V, evaluated on U; returns ((|U|,) float32 alpha, params to log).

    Also keeps the unclipped isotonic estimate on U (`alpha_raw`, not used by the loss) so a
    dataset with a known posterior can separate the estimator's error from the clipping's.
    """
    import torch

    from slam_bench.estimators import fit_alpha, teacher_margin

    est = fit_alpha(ctx.probs_val, ctx.y_val, lower_bound=lower_bound)
    alpha_u = est.predict(ctx.probs_u)
    raw = est.model.predict(teacher_margin(ctx.probs_u).cpu().numpy())
    raw_u = torch.as_tensor(raw, dtype=torch.float32).clamp(0, 1)
    params = {**est.params(), "alpha_mean_u": float(alpha_u.mean()) if len(alpha_u) else 0.0}
    return alpha_u, raw_u, params


def _choose_k(ctx: FitContext, minimum: int = 1) -> tuple[int, dict]:
    """k from the hyper-parameter: "auto" is SLaM's one rule in every suite, the likelihood of
    V's labels under the noise model (`estimators.choose_k_likelihood`: k = 2 on a binary
    task, never 1); an int (a registry default someone changed) is taken as given. Either way
    k is raised to `minimum` and capped at C, or on a top-K cache at K (the loss's mask is
    drawn from the K kept ids), and the chosen and used k are logged."""
    if ctx.hp["k"] == "auto":
        from slam_bench.estimators import choose_k_likelihood

        choice = choose_k_likelihood(ctx.probs_val, ctx.y_val)
        k, params = choice.k, choice.params()
    else:
        k, params = int(ctx.hp["k"]), {"k_rule": "fixed"}
    from slam_bench.vocab.teacher import TopKProbs

    cap = ctx.probs_u.k if isinstance(ctx.probs_u, TopKProbs) else ctx.num_classes
    if minimum > cap:
        raise ValueError(f"k must be at least {minimum} here, and a top-{cap} teacher cache "
                         f"holds only {cap} id(s) per row; use teacher_topk >= {minimum}")
    k_used = min(max(k, minimum), cap)
    return k_used, {**params, "k": k_used, "k_chosen": k}


# --------------------------------------------------------------------------- the methods

def _fit_nothing(ctx: FitContext) -> Fitted:
    return Fitted()


def _vanilla_loss(b: Batch) -> Tensor:
    from slam_bench.functional import distill_loss

    return distill_loss(b.logits, b.teacher_probs, temperature=b.hp["temperature"],
                        check_values=False)


def _taylor_loss(b: Batch) -> Tensor:
    from slam_bench.losses import taylor_ce_loss

    return taylor_ce_loss(b.logits, b.teacher_probs, order=b.hp["order"],
                          temperature=b.hp["temperature"], check_values=False)


def _fit_ups(ctx: FitContext) -> Fitted:
    from slam_bench.losses import ups_select

    if ctx.hp["rounds"] != 1:
        raise ValueError(f"ups: rounds must be 1 (one labelling round is implemented), "
                         f"got {ctx.hp['rounds']!r}")
    sel = ups_select(ctx.probs_u, ctx.mc_std_u, tau_p=ctx.hp["tau_p"], kappa_p=ctx.hp["kappa_p"],
                     tau_n=ctx.hp["tau_n"], kappa_n=ctx.hp["kappa_n"])
    return Fitted(params=sel.stats(), state={"selection": sel})


def _ups_loss(b: Batch) -> Tensor:
    from slam_bench.losses import ups_loss

    return ups_loss(b.logits, b.fitted.state["selection"].subset(b.index), check_values=False)


def _fit_vid(ctx: FitContext) -> Fitted:
    from slam_bench.losses import VIDHead

    head = VIDHead(ctx.student_feature_dim, ctx.teacher_feature_dim, hidden=ctx.hp["vid_hidden"])
    return Fitted(module=head.to(ctx.probs_u.device))


def _vid_loss(b: Batch) -> Tensor:
    return _vanilla_loss(b) + b.hp["vid_beta"] * b.fitted.module(b.features, b.teacher_features)


def _fit_weighted(ctx: FitContext) -> Fitted:
    from slam_bench.estimators import fit_weights

    w, params = fit_weights(ctx.probs_val, ctx.y_val, ctx.probs_u,
                            lower_bound=ctx.hp["weight_lower_bound"], return_params=True)
    return Fitted(params=params, per_example={"weight": w})


def _weighted_loss(b: Batch) -> Tensor:
    from slam_bench.functional import distill_loss

    return distill_loss(b.logits, b.teacher_probs, temperature=b.hp["temperature"],
                        weight=b.extra["weight"], check_values=False)


def _fit_forward(ctx: FitContext) -> Fitted:
    import torch

    from slam_bench.estimators import fit_transition, transition_params

    t = fit_transition(ctx.probs_val, ctx.y_val, smoothing=ctx.hp["smoothing"])
    # The diagonal beside the teacher's accuracy on the same data: the smoothing must not
    # pull one away from the other.
    acc = float((ctx.probs_val.argmax(dim=1) == ctx.y_val).float().mean())
    return Fitted(params={**transition_params(ctx.hp["smoothing"]),
                          "transition_diag_mean": float(t.diagonal().mean()),
                          "transition_val_accuracy": acc},
                  state={"transition": t.to(device=ctx.probs_u.device, dtype=torch.float32)})


def _forward_loss(b: Batch) -> Tensor:
    from slam_bench.losses import forward_correction_loss

    return forward_correction_loss(b.logits, b.teacher_probs, b.fitted.state["transition"],
                                   temperature=b.hp["temperature"], check_values=False)


def _slam_fitter(normalize: bool):
    def fit(ctx: FitContext) -> Fitted:
        # normalize=True divides by k - 1, so it needs k >= 2; its alpha bound depends on k.
        k, kparams = _choose_k(ctx, minimum=2 if normalize else 1)
        lower = resolve_lower_bound(ctx.hp, k, normalize)
        alpha_u, raw_u, params = _fit_alpha(ctx, lower)
        params["alpha_lower_bound_rule"] = "auto" if ctx.hp["alpha_lower_bound"] == "auto" else "fixed"
        return Fitted(params={**params, **kparams}, per_example={"alpha": alpha_u},
                      state={"alpha_raw": raw_u})
    return fit


def _slam_loss_fn(normalize: bool):
    def loss(b: Batch) -> Tensor:
        from slam_bench.functional import slam_loss

        return slam_loss(b.logits, b.teacher_probs, b.extra["alpha"], b.fitted.params["k"],
                         normalize=normalize, temperature=b.hp["temperature"], check_values=False)
    return loss


def _fused_loss(b: Batch, alpha, k, *, normalize: bool = False,
                weight: Optional[Tensor] = None) -> Tensor:
    """SLaM's loss against the batch's top-K teacher, through the student's output layer
    without its logits (alpha = 1: distillation over the K ids)."""
    from slam_bench.vocab import fused_linear_slam_loss

    t = b.teacher_probs
    return fused_linear_slam_loss(b.features, b.head.weight, t.ids, t.probs, alpha, k,
                                  bias=b.head.bias, normalize=normalize,
                                  temperature=b.hp["temperature"], weight=weight,
                                  chunk_size=b.chunk_rows, check_values=False)


def _vanilla_topk(b: Batch) -> Tensor:
    return _fused_loss(b, 1.0, 1)


def _weighted_topk(b: Batch) -> Tensor:
    return _fused_loss(b, 1.0, 1, weight=b.extra["weight"])


def _slam_topk_fn(normalize: bool):
    def loss(b: Batch) -> Tensor:
        return _fused_loss(b, b.extra["alpha"], b.fitted.params["k"], normalize=normalize)
    return loss


# Why the other methods need the dense teacher (Method.dense_only).
_DENSE_ONLY = {
    "taylor_ce": "its series sums (1 - f_j)^n over the student's probabilities f_j, which the "
                 "fused output layer never forms (no top-K form is implemented)",
    "ups": "its negative labels are the classes of teacher probability <= tau_n, with their "
           "MC-dropout spread, and a top-K cache drops every class but K",
    "vid": "it regresses the teacher's penultimate features, which a top-K cache (the "
           "teacher's output distribution only) does not hold",
    "forward": "its C x C transition matrix multiplies the student's full probability row, "
               "which the fused output layer never forms, and is fitted on the dense teacher",
}

# k = "auto": the likelihood rule (`_choose_k`), the same in every suite; no suite sets it.
_SLAM_DEFAULTS = {"alpha_lower_bound": 0.6, "alpha_auto_margin": 0.02, "k": "auto",
                  "temperature": 1.0}

register_method(Method("teacher", description="the teacher's own test accuracy"))
register_method(Method("vanilla", {"temperature": 1.0}, _fit_nothing, _vanilla_loss,
                       "soft cross-entropy on U", topk_loss=_vanilla_topk))
# The label-budget reference: V's labels spent on training instead of on estimators. Where the
# suite trains a teacher, a teacher trained on A + V labels U and the vanilla student trains
# on A + V (cross-entropy) and U (its soft labels). Where the dataset defines the teacher (a
# noise model whose accuracy the suite fixes per labeled size), no teacher trained on more
# labels exists: the same teacher labels U and only the student adds V's true labels to its
# labeled set. Its labels_used is |A| + |V| either way.
register_method(Method("vanilla_av", {"temperature": 1.0}, _fit_nothing, _vanilla_loss,
                       "vanilla distillation with V's labels spent on training (A + V)",
                       labeled_set="A+V", topk_loss=_vanilla_topk))
register_method(Method("taylor_ce", {"order": 2, "temperature": 1.0}, _fit_nothing,
                       _taylor_loss, "truncated Taylor series of -log p (Feng et al. 2020)",
                       dense_only=_DENSE_ONLY["taylor_ce"]))
# UPS's thresholds are the paper's defaults (Rizve et al. 2021); rows log the fraction of U
# with a positive label (`ups_pos_fraction`) and with any label (`ups_labeled_fraction`).
register_method(Method("ups", {"tau_p": 0.7, "kappa_p": 0.05, "tau_n": 0.05,
                               "kappa_n": 0.005, "rounds": 1},
                       _fit_ups, _ups_loss, "uncertainty-aware pseudo-label selection, one round",
                       dense_only=_DENSE_ONLY["ups"]))
register_method(Method("vid", {"vid_beta": 1.0, "vid_hidden": None, "temperature": 1.0},
                       _fit_vid, _vid_loss, "vanilla + variational information distillation",
                       dense_only=_DENSE_ONLY["vid"]))
register_method(Method("weighted", {"weight_lower_bound": 0.0, "temperature": 1.0},
                       _fit_weighted,
                       _weighted_loss, "vanilla with per-example weights from the estimator data",
                       fits_on_labels=True, topk_loss=_weighted_topk))
register_method(Method("forward", {"smoothing": TRANSITION_SMOOTHING, "temperature": 1.0},
                       _fit_forward, _forward_loss, "global transition-matrix forward correction",
                       fits_on_labels=True, dense_only=_DENSE_ONLY["forward"]))
register_method(Method("slam", dict(_SLAM_DEFAULTS), _slam_fitter(False),
                       _slam_loss_fn(False), "student-label mixing, s = 1", fits_on_labels=True,
                       topk_loss=_slam_topk_fn(False)))
register_method(Method("slam_normalized", {**_SLAM_DEFAULTS, "alpha_lower_bound": "auto"},
                       _slam_fitter(True), _slam_loss_fn(True),
                       "student-label mixing, s = 1/(k-1)", fits_on_labels=True,
                       topk_loss=_slam_topk_fn(True)))
