"""Device-agnostic, batched training loops for teachers and students, and evaluation.

All data tensors live on the training device; index permutations come from a CPU generator
seeded by the trial's train seed, so the same seeds give the same models on the same device.
The model of the last step is the one evaluated ("last" selection: nothing is chosen on V or
on the test set).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slam_bench.pipeline.suites import TrainSpec

EVAL_BATCH = 1024  # rows per forward pass when evaluating (memory only; results unaffected)


def make_optimizer(params: Iterable[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {spec.optimizer!r}")


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
    model.train()
    for _ in range(steps):
        idx = batches.next()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps


def train_student(model: nn.Module, x_a: Tensor, y_a: Tensor, x_u: Tensor,
                  unlabeled_loss: Callable[[Tensor, Tensor, Tensor], Tensor], spec: TrainSpec,
                  seed: int, labeled_weight: float, extra_params: Iterable[nn.Parameter] = ()) -> int:
    """Train on A (cross-entropy) and U (the method's loss) jointly; returns the step count.

    One step = one batch of U plus one batch of A of the same size (A is small, so it is
    cycled): loss = unlabeled_loss(idx_u, logits_u, features_u) + labeled_weight * CE(A).
    An epoch is one pass over U. Both batches go through the model in one forward pass.
    """
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(list(model.parameters()) + list(extra_params), spec)
    u_batches = _Batches(len(x_u), spec.batch_size, g, x_u.device)
    a_batches = _Batches(len(x_a), spec.batch_size, g, x_a.device)
    steps = spec.steps(len(x_u))
    model.train()
    for _ in range(steps):
        iu, ia = u_batches.next(), a_batches.next()
        feats = model.forward_features(torch.cat([x_u[iu], x_a[ia]]))
        logits = model.head(feats)
        nu = len(iu)
        loss = unlabeled_loss(iu, logits[:nu], feats[:nu])
        loss = loss + labeled_weight * F.cross_entropy(logits[nu:], y_a[ia])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, *, features: bool = False):
    """Eval-mode softmax probabilities (N, C) float32, and penultimate features (N, F) if asked."""
    model.eval()
    probs, feats = [], []
    for i in range(0, len(x), EVAL_BATCH):
        f = model.forward_features(x[i:i + EVAL_BATCH])
        probs.append(torch.softmax(model.head(f).float(), dim=1))
        if features:
            feats.append(f.float())
    p = torch.cat(probs) if probs else torch.empty(0)
    return (p, torch.cat(feats)) if features else p


def accuracy(probs: Tensor, labels: Tensor) -> float:
    return float((probs.argmax(dim=1) == labels).float().mean()) if len(labels) else float("nan")
