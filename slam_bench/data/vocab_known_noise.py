"""`vocab_known_noise`: the known-answer task of `known_noise` at a vocabulary's scale (tens of
thousands of classes), with a teacher that follows SLaM's noise model and whose outputs can be
drawn as top-K rows without ever forming the dense N x C ones (docs/vocab.md).

The clean task. Classes have a vocabulary's Zipf frequencies, pi_c proportional to
(c + 1)^-zipf (class 0 the most frequent), so that with tens of thousands of examples the
frequent classes are seen often and the task is learnable, as a language model's next token
is. Classes come in *families* of `candidates` consecutive ids (classes of similar frequency):
a family has a centre m_f ~ N(0, family_scale^2 I_dim), far from every other family's, and
class c of family f has the mean mu_c = m_f + class_separation * u_c (u_c a random unit
vector), so a family's classes are close and confusable. An example draws its label y from pi
and x = mu_y + N(0, I_dim). The Bayes posterior is p(c | x) ~ pi_c exp(-|x - mu_c|^2 / 2), whose
argmax is linear in x (shared isotropic covariance): a linear student can represent it. The
loader states the Bayes accuracy as the ceiling (`bayes_test_acc`: the mean over the test split
of max_c p(c | x), the expected accuracy of the Bayes rule at those x) and the Bayes rule's
test predictions (`best_test_pred`), computed in chunks of test rows over all C classes.

The teacher (`teacher_fn(accuracy, seed, topk=None)`), SLaM's model as in `known_noise`:
- alpha(x) = clip(b + spread (2 r(x) - 1), alpha_min, 1), r(x) the rank of <v, x> among the
  training examples, b set so that alpha's mean over the training split is `accuracy`;
- with probability alpha(x) its label is y, otherwise one of the other classes of y's family
  (the candidate set), uniformly; the draws are independent per example;
- its row: its label gets the shown confidence conf = min(alpha(x), 1 - CANDIDATE_FLOOR), the
  other candidates share 1 - conf in a random order with shares `tie_break` apart, all of that
  times 1 - tail_mass; the remaining `tail_mass` is spread over every class outside the family
  in proportion to pi (a language model's unigram backoff). The loader refuses settings where a
  tail entry could outrank a candidate, so the teacher's top-`candidates` is always the
  candidate set (the model holds).
With `topk=K` the rows come back as `TopKProbs`: the candidates by probability, then the tail's
largest entries (the most frequent classes outside the family, in id order), cut to K. The
dense rows (topk None) are the same numbers scattered into (N, C).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from slam_bench.data.known_noise import _check_unit, _rank01
from slam_bench.data.synthetic import (SyntheticDataset, SyntheticTeacher, _check_positive_int,
                                       check_accuracy, solve_mean)
from slam_bench.vocab.teacher import ID_DTYPE, TopKProbs

# The teacher's shown confidence is at most 1 - CANDIDATE_FLOOR: its other candidates keep at
# least that much between them, enough to stay above every tail class (known_noise keeps 0.01;
# with 8 candidates and a Zipf tail, 0.02 leaves the loader's check room for tail_mass 0.01).
CANDIDATE_FLOOR = 0.02
# Test rows per chunk of the Bayes posterior (chunk x C log-probabilities at a time).
BAYES_CHUNK = 256


def _check_float(name: str, value, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float > {low:g}, got {value!r}")
    return float(value)


def _bayes(x: Tensor, means: Tensor, log_prior: Tensor):
    """(expected accuracy of the Bayes rule at the rows of x, its (N,) int64 predictions):
    max and argmax of the posterior, chunk by chunk over the rows, all C classes each."""
    acc, pred = [], []
    sq = (means * means).sum(dim=1)
    for i in range(0, len(x), BAYES_CHUNK):
        # log pi_c - |x - mu_c|^2 / 2, up to a term constant in c
        logit = log_prior[None, :] + x[i:i + BAYES_CHUNK] @ means.T - 0.5 * sq[None, :]
        top = logit.max(dim=1)
        acc.append(torch.exp(top.values - torch.logsumexp(logit, dim=1)))
        pred.append(top.indices)
    return float(torch.cat(acc).mean()), torch.cat(pred)


def load_vocab_known_noise(root=None, *, num_classes: int = 32768, candidates: int = 8,
                           dim: int = 32, zipf: float = 1.0, family_scale: float = 3.0,
                           class_separation: float = 3.0, n_train: int = 16000,
                           n_test: int = 4000, spread: float = 0.3, alpha_min: float = 0.4,
                           tail_mass: float = 0.01, tie_break: float = 0.1,
                           seed: int = 0) -> SyntheticDataset:
    """The large-class known-answer dataset (module docstring): x float32 (N, dim), int64
    labels in [0, num_classes). num_classes must be a multiple of `candidates` (the family
    size). Its `teacher_fn(accuracy, seed, topk=None)` returns a `SyntheticTeacher` whose
    alpha_train is the true alpha(x) and whose rows are dense (N, C) float32, or `TopKProbs`
    (ids int32, probs float32) with topk=K."""
    _check_positive_int("num_classes", num_classes, 4)
    _check_positive_int("candidates", candidates, 2)
    if num_classes % candidates:
        raise ValueError(f"num_classes ({num_classes}) must be a multiple of candidates "
                         f"({candidates}): the classes come in families of that size")
    _check_positive_int("dim", dim, 2)
    _check_positive_int("n_train", n_train)
    _check_positive_int("n_test", n_test)
    zipf = _check_float("zipf", zipf, -1e-12)
    family_scale = _check_float("family_scale", family_scale)
    class_separation = _check_float("class_separation", class_separation)
    spread, tie_break = _check_unit("spread", spread), _check_unit("tie_break", tie_break)
    tail_mass = _check_unit("tail_mass", tail_mass)
    kc, c = candidates, num_classes
    # The teacher's label must stay its argmax: conf > (1 - conf) * (largest other share).
    top_other = (1 + tie_break) / (kc - 1) if kc > 2 else 1.0
    floor = top_other / (1 + top_other)
    if not isinstance(alpha_min, (int, float)) or isinstance(alpha_min, bool) \
            or not floor < alpha_min <= 1.0:
        raise ValueError(f"alpha_min must lie in ({floor:.3f}, 1] for {kc} candidates and "
                         f"tie_break={tie_break} (the teacher's label must stay its argmax), "
                         f"got {alpha_min!r}")
    prior = (torch.arange(c, dtype=torch.float64) + 1.0) ** -zipf
    prior = prior / prior.sum()
    family_mass = prior.view(-1, kc).sum(dim=1)  # (C / kc,)
    # The smallest candidate entry against the largest tail entry: over the families, the most
    # frequent class outside the family over the tail's normaliser 1 - the family's mass.
    cand_min = (1 - tail_mass) * CANDIDATE_FLOOR * (1 - tie_break) / (kc - 1)
    top_outside = torch.full_like(family_mass, float(prior[0]))
    top_outside[0] = prior[kc]
    tail_max = tail_mass * float((top_outside / (1 - family_mass)).max())
    if not tail_max < cand_min:
        raise ValueError(f"tail_mass={tail_mass} lets a tail class ({tail_max:.3g}) outrank a "
                         f"candidate ({cand_min:.3g}); lower tail_mass (or zipf) so that the "
                         f"teacher's top-{kc} is its candidate set")

    g = torch.Generator().manual_seed(seed)
    centres = family_scale * torch.randn(c // kc, dim, generator=g, dtype=torch.float64)
    u = torch.randn(c, dim, generator=g, dtype=torch.float64)
    means = centres.repeat_interleave(kc, dim=0) + class_separation * u / u.norm(dim=1,
                                                                                keepdim=True)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    v = v / v.norm()
    n = n_train + n_test
    y = torch.multinomial(prior, n, replacement=True, generator=g)
    x = means[y] + torch.randn(n, dim, generator=g, dtype=torch.float64)
    rank = _rank01(x @ v, (x @ v)[:n_train])  # confidence coordinate, uniform on train
    bayes_acc, bayes_pred = _bayes(x[n_train:], means, prior.log())
    family = y // kc

    def alpha_of(b: float) -> Tensor:
        return (b + spread * (2 * rank - 1)).clamp(alpha_min, 1.0)

    def teacher(accuracy: float, teacher_seed: int, topk: Optional[int] = None) -> SyntheticTeacher:
        accuracy = check_accuracy(accuracy, alpha_min)
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int)
                                 or not 1 <= topk <= c):
            raise ValueError(f"topk must be None or an int in [1, {c}], got {topk!r}")
        b = solve_mean(lambda b: alpha_of(b)[:n_train], accuracy, alpha_min - spread, 1.0 + spread)
        alpha = alpha_of(b)
        conf = alpha.clamp(max=1.0 - CANDIDATE_FLOOR)
        tg = torch.Generator().manual_seed(int(teacher_seed))
        wrong = torch.rand(n, generator=tg, dtype=torch.float64) >= alpha
        # The teacher's label: y, or one of the kc - 1 others of y's family, uniformly.
        other = (y % kc + 1 + torch.randint(kc - 1, (n,), generator=tg)) % kc
        label = torch.where(wrong, family * kc + other, y)
        # Its family's other classes, in a random order, share 1 - conf, tie_break apart.
        shares = 1.0 + tie_break * torch.linspace(1, -1, kc - 1, dtype=torch.float64)
        shares = shares / shares.sum()
        others = torch.stack([torch.arange(kc)[torch.arange(kc) != p] for p in range(kc)])
        perm = torch.rand(n, kc - 1, generator=tg).argsort(dim=1)
        cand = torch.cat([label[:, None], family[:, None] * kc + others[label % kc].gather(1, perm)],
                         dim=1)  # (N, kc): the label, then the others by decreasing share
        cand_p = (1 - tail_mass) * torch.cat([conf[:, None],
                                              (1 - conf)[:, None] * shares[None, :]], dim=1)
        z = 1.0 - family_mass[family]  # (N,): the tail's normaliser, the prior outside
        params = {"teacher_alpha_mean": round(accuracy, 6),
                  "teacher_alpha_min": round(float(alpha.min()), 6),
                  "teacher_alpha_max": round(float(alpha.max()), 6),
                  "teacher_candidates": kc, "teacher_tail_mass": tail_mass}
        if topk is None:
            probs = tail_mass * prior[None, :] / z[:, None]
            probs.scatter_(1, cand, cand_p)
            rows = probs.float()
            return SyntheticTeacher(rows[:n_train], rows[n_train:], alpha[:n_train].float(),
                                    params)
        # The tail's largest entries: the lowest ids outside the family, whose block of kc
        # ids starts at family * kc; the j-th of them is j, or j + kc once past the block.
        j = torch.arange(max(topk - kc, 0))
        start = (family * kc)[:, None]
        tail_ids = torch.where(j[None, :] < start, j[None, :], j[None, :] + kc)
        tail_p = tail_mass * prior[tail_ids] / z[:, None]
        ids = torch.cat([cand, tail_ids], dim=1)[:, :topk].to(ID_DTYPE)
        p = torch.cat([cand_p, tail_p], dim=1)[:, :topk].float()
        return SyntheticTeacher(TopKProbs(ids[:n_train], p[:n_train], c),
                                TopKProbs(ids[n_train:], p[n_train:], c),
                                alpha[:n_train].float(), params)

    return SyntheticDataset("vocab_known_noise", x[:n_train].float(), y[:n_train],
                            x[n_train:].float(), y[n_train:], num_classes=c, input_kind="vector",
                            meta={"dim": dim, "candidates": kc, "zipf": zipf,
                                  "family_scale": family_scale,
                                  "class_separation": class_separation, "spread": spread,
                                  "alpha_min": alpha_min, "tail_mass": tail_mass,
                                  "tie_break": tie_break, "seed": seed,
                                  "bayes_test_acc": round(bayes_acc, 4),
                                  "bayes_rule_test_acc": round(float(
                                      (bayes_pred == y[n_train:]).double().mean()), 4)},
                            teacher_fn=teacher, best_test_pred=bayes_pred,
                            sparse_teacher=True)
