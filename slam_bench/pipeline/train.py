"""Device-agnostic, batched training loops for teachers and students, and evaluation.

All data tensors live on the training device; index permutations come from a CPU generator
seeded by the trial's train seed, so the same seeds give the same models on the same device.
The model of the last step is the one evaluated ("last" selection: nothing is chosen on V or
on the test set), and every loop follows its TrainSpec's learning-rate schedule (`lr_factor`). The student loop and evaluation take a `DistContext`: with one process
(`DistContext.single`) its collectives are identities; across DDP ranks they split each global
batch and the evaluated rows between ranks.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slam_bench.distributed import DistContext
from slam_bench.pipeline.suites import LABELED_WEIGHTINGS, LR_SCHEDULES, TrainSpec
from slam_bench.vocab.teacher import TopKProbs, teacher_argmax

EVAL_BATCH = 1024  # rows per forward pass when evaluating (memory only; results unaffected)
# ... and at most about this many logits per pass (16 MiB in fp32), so that evaluating a
# student with C = 32,768 classes holds 128 rows of logits at a time, never N x C.
EVAL_LOGITS = 1 << 22
# Steps between host-side checks that the loss is finite on CUDA (each check syncs; NaN stays
# NaN, so a late check loses nothing but the wasted steps). On CPU every step is checked.
CHECK_EVERY_CUDA = 50


class NonFiniteLoss(FloatingPointError):
    """A training loss became NaN or infinite: the model is ruined and nothing trained from it
    may be recorded. The message says which loop and at which step."""


class _FiniteGuard:
    """Watches a loop's losses without a host sync per step on CUDA: a device-side flag is
    or-ed every step and read every `every` steps and at the end. Across DDP ranks the flag
    is reduced at the same steps on every rank, so all ranks raise together (a rank raising
    alone would leave the others waiting in a collective)."""

    def __init__(self, what: str, total: int, device: torch.device,
                 ctx: Optional[DistContext] = None):
        self.what, self.total, self.ctx = what, total, ctx
        self.every = 1 if device.type == "cpu" else CHECK_EVERY_CUDA
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.since = 0  # first step of the window being watched

    def step(self, i: int, loss: Tensor) -> None:
        self.bad |= ~torch.isfinite(loss.detach())
        if (i + 1) % self.every == 0 or i + 1 == self.total:
            flag = self.bad.float()
            if self.ctx is not None:
                flag = self.ctx.all_reduce_mean(flag)
            if float(flag) > 0:
                at = (f"step {i + 1}" if i == self.since
                      else f"a step between {self.since + 1} and {i + 1}")
                raise NonFiniteLoss(f"the {self.what} loss became non-finite (NaN or inf) at {at} "
                                    f"of {self.total}")
            self.since = i + 1


def make_optimizer(params: Iterable[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {spec.optimizer!r}")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate of 0-based `step` of `total`, as a fraction of the base rate.

    Progress t = step / (total - 1) runs from 0 at the first step to 1 at the last: "cosine"
    gives (1 + cos(pi t)) / 2 and "linear" 1 - t, both 1 at the first step and exactly 0 at the
    last, so the model read at the end is where the decay settled it, whatever the loss;
    "constant" gives 1. A run of one step takes the full rate (there is nothing to decay).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if not 0 <= step < total:
        raise ValueError(f"step must be in [0, total = {total}), got {step}")
    if schedule == "constant" or total == 1:
        return 1.0
    t = step / (total - 1)
    return 0.5 * (1.0 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t


def set_lr(opt: torch.optim.Optimizer, spec: TrainSpec, step: int, total: int) -> None:
    """Put the scheduled rate of `step` in every parameter group (before `opt.step()`)."""
    lr = spec.lr * lr_factor(spec.lr_schedule, step, total)
    for group in opt.param_groups:
        group["lr"] = lr


class _Batches:
    """Endless shuffled mini-batches of range(n): a fresh permutation per epoch."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device):
        self.n, self.bs, self.g, self.device = n, min(batch_size, n), generator, device
        self._perm, self._pos = None, n

    def next(self) -> Tensor:
        if self._pos + self.bs > self.n:  # drop the ragged tail: equal-size steps
            self._perm, self._pos = torch.randperm(self.n, generator=self.g), 0
        idx = self._perm[self._pos:self._pos + self.bs]
        self._pos += self.bs
        return idx.to(self.device)


def train_supervised(model: nn.Module, x: Tensor, y: Tensor, spec: TrainSpec, seed: int,
                     progress: Optional[Callable[[], None]] = None) -> int:
    """Cross-entropy training on (x, y) for spec.steps(len(x)) steps; returns the step count."""
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), spec)
    batches = _Batches(len(x), spec.batch_size, g, x.device)
    steps = spec.steps(len(x))
    guard = _FiniteGuard("teacher's cross-entropy", steps, x.device)
    model.train()
    for i in range(steps):
        idx = batches.next()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        guard.step(i, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        set_lr(opt, spec, i, steps)
        opt.step()
    return steps


# How the labeled cross-entropy on A and the method's loss on U are combined in one step
# (LABELED_WEIGHTINGS). "pooled" [paper: the student trains on A together with U]: every step
# draws one batch from the pool A + U, and each labeled example weighs as much as one
# unlabeled example (times `labeled_weight`, 1 by default). "per_batch" (the project's earlier
# scheme): every step pairs a batch of U with an equally sized batch of A (cycled), so the few
# labeled examples weigh as much as all of U together; kept as a named, logged option.
def check_labeled_weighting(value: str) -> str:
    if value not in LABELED_WEIGHTINGS:
        raise ValueError(f"labeled_weighting must be one of {', '.join(LABELED_WEIGHTINGS)}, "
                         f"got {value!r}")
    return value


class StudentStep(nn.Module):
    """One student training step's loss as a module, so that DDP (which only sees a module's
    forward) covers both the student and any module a method trains with it (VID's head).

    forward(iu (b_u,) int64 indices into U, x_u (b_u, ...), x_a (b_a, ...), y_a (b_a,) int64)
    -> scalar loss. With L_U = unlabeled_loss(iu, logits_u, features_u) (a mean over the b_u
    rows) and CE_i the cross-entropy of labeled row i, w = labeled_weight:
      "pooled":    (b_u * L_U + w * sum_i CE_i) / (b_u + b_a)   (one example, one vote)
      "per_batch": L_U + w * mean_i CE_i
    Both batches go through the student in one forward pass; an empty part contributes 0.

    fused_head (rows per chunk, or None): train the output layer through
    `fused_linear_slam_loss` (the top-K teacher caches, docs/vocab.md), so that the batch's
    (b, C) logits are never formed, only `fused_head` rows of them at a time. unlabeled_loss
    then gets None for the logits, and CE_i is the same loss with a one-hot target (alpha = 1:
    exactly the cross-entropy).
    """

    def __init__(self, student: nn.Module, extra: Optional[nn.Module],
                 unlabeled_loss: Callable[[Tensor, Optional[Tensor], Tensor], Tensor],
                 labeled_weight: float, labeled_weighting: str = "pooled",
                 fused_head: Optional[int] = None):
        super().__init__()
        self.student, self.extra = student, extra
        self.unlabeled_loss, self.labeled_weight = unlabeled_loss, labeled_weight
        self.labeled_weighting = check_labeled_weighting(labeled_weighting)
        if fused_head is not None and (isinstance(fused_head, bool) or
                                       not isinstance(fused_head, int) or fused_head < 1):
            raise ValueError(f"fused_head must be None or an int >= 1 (rows of logits per "
                             f"chunk), got {fused_head!r}")
        self.fused_head = fused_head

    def forward(self, iu: Tensor, x_u: Tensor, x_a: Tensor, y_a: Tensor) -> Tensor:
        feats = self.student.forward_features(torch.cat([x_u, x_a]))
        nu, na = len(x_u), len(x_a)
        if self.fused_head is not None:
            return self._combine(*self._fused_parts(iu, feats, nu, y_a), nu, na)
        logits = self.student.head(feats)
        if nu:
            loss_u = self.unlabeled_loss(iu, logits[:nu], feats[:nu])
        else:  # a pooled batch drawn from A only; keep every parameter in the graph for DDP
            loss_u = self._zero(logits)
        ce_a = F.cross_entropy(logits[nu:], y_a, reduction="sum")
        return self._combine(loss_u, ce_a, nu, na)

    def _zero(self, t: Tensor) -> Tensor:
        """0, with t and every parameter of `extra` (and, fused, of the head) in the graph."""
        loss = t.sum() * 0.0
        mods = [m for m in (self.extra, self.student.head if self.fused_head is not None else None)
                if m is not None]
        for m in mods:
            loss = loss + sum(p.sum() for p in m.parameters()) * 0.0
        return loss

    def _fused_parts(self, iu: Tensor, feats: Tensor, nu: int, y_a: Tensor):
        from slam_bench.vocab import fused_linear_slam_loss

        head = self.student.head
        loss_u = self.unlabeled_loss(iu, None, feats[:nu]) if nu else self._zero(feats)
        if len(y_a):
            ones = torch.ones(len(y_a), 1, dtype=feats.dtype, device=feats.device)
            ce_a = fused_linear_slam_loss(feats[nu:], head.weight, y_a[:, None], ones, 1.0, 1,
                                          bias=head.bias, reduction="sum",
                                          chunk_size=self.fused_head, check_values=False)
        else:
            ce_a = self._zero(feats)
        return loss_u, ce_a

    def _combine(self, loss_u: Tensor, ce_a: Tensor, nu: int, na: int) -> Tensor:
        if self.labeled_weighting == "pooled":
            return (nu * loss_u + self.labeled_weight * ce_a) / (nu + na)
        return loss_u + self.labeled_weight * ce_a / max(na, 1)


def step_peak_bytes(step: StudentStep, iu: Tensor, x_u: Tensor, x_a: Tensor, y_a: Tensor) -> int:
    """Peak extra bytes of one forward and backward of `step` on this batch
    (slam_bench.memory.peak_extra_bytes: the CPU allocator through torch.profiler, or CUDA's
    peak statistics), the parameters' gradients included. The step leaves nothing behind: the
    random state and the buffers (e.g. BatchNorm's running statistics) are restored and the
    gradients dropped, so training after the probe is what it would have been without it."""
    from slam_bench.memory import peak_extra_bytes

    dev = x_u.device
    buffers = [(b, b.detach().clone()) for b in step.buffers()]
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        step.train()
        peak = peak_extra_bytes(lambda: step(iu, x_u, x_a, y_a).backward(), dev)
    with torch.no_grad():
        for b, saved in buffers:
            b.copy_(saved)
    for p in step.parameters():
        p.grad = None
    return peak


def first_batch(step: StudentStep, x_a: Tensor, y_a: Tensor, x_u: Tensor, spec: TrainSpec,
                seed: int):
    """The first batch `train_student` draws with this seed: (iu, x_u, x_a, y_a)."""
    g = torch.Generator().manual_seed(seed)
    na, nu = len(x_a), len(x_u)
    if step.labeled_weighting == "pooled":
        idx = _Batches(na + nu, spec.batch_size, g, x_u.device).next()
        ia, iu = idx[idx < na], idx[idx >= na] - na
    else:
        iu = _Batches(nu, spec.batch_size, g, x_u.device).next()
        ia = _Batches(na, spec.batch_size, g, x_a.device).next()
    return iu, x_u[iu], x_a[ia], y_a[ia]


def student_steps(spec: TrainSpec, n_labeled: int, n_unlabeled: int, labeled_weighting: str) -> int:
    """Optimizer steps of a student: an epoch is one pass over the pool A + U ("pooled") or
    over U ("per_batch")."""
    pooled = check_labeled_weighting(labeled_weighting) == "pooled"
    return spec.steps(n_labeled + n_unlabeled if pooled else n_unlabeled)


def train_student(ctx: DistContext, step: StudentStep, x_a: Tensor, y_a: Tensor, x_u: Tensor,
                  spec: TrainSpec, seed: int) -> int:
    """Train on A (cross-entropy) and U (the method's loss) jointly; returns the step count.

    "pooled" (step.labeled_weighting): one step = one batch of the shuffled pool A + U; an
    epoch is one pass over the pool. "per_batch": one step = one batch of U plus one batch of
    A of the same size (A is small, so it is cycled); an epoch is one pass over U.
    Every rank draws the same global batches (same generator, same seed) and takes its
    `[rank::world]` share; DDP averages the gradients, so global batch, steps and learning
    rate do not depend on the number of ranks (BatchNorm aside, which sees per-rank batches).
    With one process the share is the whole batch.
    """
    na, nu = len(x_a), len(x_u)
    pooled = step.labeled_weighting == "pooled"
    if ctx.distributed:
        sets = (("A + U", na + nu),) if pooled else (("U", nu), ("A", na))
        for name, n in sets:
            if min(spec.batch_size, n) < ctx.world_size:
                raise ValueError(f"the batch of {name} ({min(spec.batch_size, n)} rows) is smaller "
                                 f"than the {ctx.world_size} ranks; use fewer processes or a "
                                 f"larger batch")
    model = ctx.wrap(step)
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), spec)
    if pooled:
        pool = _Batches(na + nu, spec.batch_size, g, x_u.device)
    else:
        u_batches = _Batches(nu, spec.batch_size, g, x_u.device)
        a_batches = _Batches(na, spec.batch_size, g, x_a.device)
    steps = student_steps(spec, na, nu, step.labeled_weighting)
    guard = _FiniteGuard("student's training", steps, x_u.device, ctx if ctx.distributed else None)
    model.train()
    for i in range(steps):
        if pooled:  # pool index i < |A| is labeled example i, else unlabeled example i - |A|
            idx = pool.next()[ctx.rank::ctx.world_size]
            ia, iu = idx[idx < na], idx[idx >= na] - na
        else:
            iu = u_batches.next()[ctx.rank::ctx.world_size]
            ia = a_batches.next()[ctx.rank::ctx.world_size]
        loss = model(iu, x_u[iu], x_a[ia], y_a[ia])  # the wrapper itself: it arms DDP's hooks
        guard.step(i, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        set_lr(opt, spec, i, steps)
        opt.step()
    return steps


def eval_rows(num_classes: int) -> int:
    """Rows per evaluation pass: EVAL_BATCH, fewer where that many rows of logits would pass
    EVAL_LOGITS (only beyond 4,096 classes)."""
    return max(1, min(EVAL_BATCH, EVAL_LOGITS // num_classes))


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, *, features: bool = False, topk: Optional[int] = None):
    """Eval-mode softmax probabilities (N, C) float32, and penultimate features (N, F) if asked.

    topk: instead of the (N, C) probabilities, their top-`topk` per row as a `TopKProbs` (ids
    int32, probs float32), taken pass by pass, so the N x C rows never exist."""
    model.eval()
    probs, feats = [], []
    step = eval_rows(model.head.out_features)
    for i in range(0, len(x), step):
        f = model.forward_features(x[i:i + step])
        p = torch.softmax(model.head(f).float(), dim=1)
        probs.append(p if topk is None else TopKProbs.from_dense(p, topk))
        if features:
            feats.append(f.float())
    if topk is not None:
        c = model.head.out_features
        p = TopKProbs(torch.cat([t.ids for t in probs]), torch.cat([t.probs for t in probs]), c) \
            if probs else TopKProbs.from_dense(torch.empty(0, c, device=x.device), topk)
    else:
        p = torch.cat(probs) if probs else torch.empty(0)
    return (p, torch.cat(feats)) if features else p


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor) -> Tensor:
    """(N,) int64: the eval-mode argmax of the softmax probabilities (as `predict(...).argmax`,
    the same ties), one pass of `eval_rows(C)` rows at a time (never N x C)."""
    model.eval()
    step = eval_rows(model.head.out_features)
    out = [torch.softmax(model(x[i:i + step]).float(), dim=1).argmax(dim=1)
           for i in range(0, len(x), step)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64, device=x.device)


def _check_shardable(ctx: DistContext, n: int) -> None:
    if ctx.distributed and n < ctx.world_size:
        raise ValueError(f"cannot shard {n} rows over {ctx.world_size} ranks")


def sharded_predict(ctx: DistContext, model: nn.Module, x: Tensor, *, features: bool = False,
                    topk: Optional[int] = None):
    """`predict` with the rows of x split across ranks; every rank gets the full result, in
    row order. With one process it is `predict`."""
    _check_shardable(ctx, len(x))
    n = len(x)
    out = predict(model, x[ctx.shard(n)], features=features, topk=topk)
    p = out[0] if features else out
    if isinstance(p, TopKProbs):
        p = TopKProbs(ctx.gather_rows(p.ids, n), ctx.gather_rows(p.probs, n), p.num_classes)
    else:
        p = ctx.gather_rows(p, n)
    return (p, ctx.gather_rows(out[1], n)) if features else p


def sharded_predict_labels(ctx: DistContext, model: nn.Module, x: Tensor) -> Tensor:
    """`predict_labels` with the rows of x split across ranks, gathered in row order."""
    _check_shardable(ctx, len(x))
    return ctx.gather_rows(predict_labels(model, x[ctx.shard(len(x))]), len(x))


def accuracy(probs, labels: Tensor) -> float:
    """Accuracy of the argmax of probs (N, C) or a TopKProbs, or of (N,) int64 labels."""
    pred = probs if isinstance(probs, Tensor) and probs.dim() == 1 else teacher_argmax(probs)
    return float((pred == labels).float().mean()) if len(labels) else float("nan")
