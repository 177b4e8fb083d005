"""Train the teacher on A once per (dataset, labeled size, split seed) and cache its outputs.

The cache file `<cache_dir>/teacher/<key>.pt` holds the teacher's probabilities on V, U and
test, the std of its probabilities over MC-dropout passes on U (UPS) and its penultimate
features on U (VID). `key` hashes everything that determines them: the dataset's name, options
and a digest of its tensors (so a loader that orders examples differently gets other keys),
the split, the teacher's model and training numbers, the seed, the MC passes and the
pipeline version.

The same cache holds the teachers derived from a trial's (`derived_key`): the A + V teacher
of the `vanilla_av` reference (`labeled_av_split`) and the K cross-fitting teachers, each
trained on A minus one fold (`crossfit_probs`).

The file also holds `checksum`, a SHA-256 of every tensor's bytes and every scalar, verified
on load: a flipped byte anywhere in the data is a `CacheError` naming the file and how to
rebuild it, never silently different teacher outputs. A cache from before checksums existed is
recomputed (the teacher is deterministic, so that costs time, not results).

A top-K cache (`teacher_topk` = K, docs/vocab.md) holds the same outputs as `TopKProbs`: each
row's K largest probabilities (in the teacher's dtype) and their ids (int32), the mass outside
dropped. It is keyed by `derived_key(key, teacher_topk=K)` and checksummed the same way. It
holds no MC-dropout spread and no features (the methods that read them need the dense
teacher and refuse a top-K cache). Inference keeps the top-K of each pass of rows, so the
N x C probabilities are never held; where the trial's dense cache exists already, the top-K
cache is cut from it instead of training the teacher again.
"""
from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from slam_bench.data.base import Dataset
from slam_bench.distributed import DistContext
from slam_bench.models import build_model
from slam_bench.fileio import atomic_write
from slam_bench.pipeline.hashing import PIPELINE_VERSION, stable_hash, tensor_digest
from slam_bench.pipeline.splits import Split, crossfit_folds
from slam_bench.pipeline.suites import ModelSpec, TrainSpec
from slam_bench.losses import mc_dropout_probs
from slam_bench.pipeline.train import (EVAL_BATCH, NonFiniteLoss, accuracy, sharded_predict,
                                       train_supervised)
from slam_bench.vocab.teacher import Probs, TopKProbs

_SCALARS = ("key", "test_acc", "val_acc", "steps", "wall_s")


class CacheError(RuntimeError):
    """A cache file exists but cannot be read; the message names it and the fix."""


_PROBS = ("probs_val", "probs_u", "probs_test")


@dataclass
class TeacherOutputs:
    """float32 CPU tensors: probs_* (n, C); mc_std_u (|U|, C); features_u (|U|, F).

    On a top-K cache (teacher_topk = K): probs_* are `TopKProbs` (ids (n, K) int32, probs
    (n, K) in the teacher's dtype) and mc_std_u, features_u are (|U|, 0).
    A synthetic teacher (`synthetic_teacher_outputs`) also carries the true alpha on U
    (alpha_true_u (|U|,)) and the values its noise model logs (`params`); neither is cached."""
    key: str
    probs_val: Probs
    probs_u: Probs
    probs_test: Probs
    mc_std_u: Tensor
    features_u: Tensor
    test_acc: float
    val_acc: float
    steps: int
    wall_s: float
    alpha_true_u: Optional[Tensor] = None
    params: Dict[str, float] = field(default_factory=dict)
    teacher_topk: Optional[int] = None

    _TENSORS = ("probs_val", "probs_u", "probs_test", "mc_std_u", "features_u")

    def _flat(self):
        """Every stored tensor, a TopKProbs as its ids and probs."""
        out = []
        for k in self._TENSORS:
            t = getattr(self, k)
            out += [t.ids, t.probs] if isinstance(t, TopKProbs) else [t]
        return out

    def checksum(self) -> str:
        """SHA-256 over the tensors (dtype, shape, bytes) and the scalars (and, for a top-K
        cache, K and C)."""
        topk = {} if self.teacher_topk is None else \
            {"teacher_topk": self.teacher_topk, "num_classes": self.probs_u.num_classes}
        return stable_hash({"tensors": tensor_digest(*self._flat(), length=64),
                            "scalars": {k: getattr(self, k) for k in _SCALARS}, **topk},
                           length=64)

    def cache_bytes(self) -> int:
        """Bytes of the teacher's probability rows on V, U and test as the cache holds them:
        (n, C) dense rows, or the top-K ids and probabilities. (A dense cache of a trained
        teacher also holds UPS's MC-dropout spread and VID's features, not counted here.)"""
        return sum(t.nbytes if isinstance(t, TopKProbs) else t.numel() * t.element_size()
                   for t in (getattr(self, k) for k in _PROBS))

    def to_topk(self, k: int) -> "TeacherOutputs":
        """These outputs as a top-k cache (from dense rows, or the first k of a top-K' cache
        with K' >= k); MC spread and features are dropped ((|U|, 0))."""
        def cut(p):
            if isinstance(p, TopKProbs):
                if k > p.k:
                    raise ValueError(f"teacher_topk = {k} cannot be cut from a top-{p.k} cache")
                return p.first(k)
            return TopKProbs.from_dense(p, k)
        empty = self.mc_std_u.new_empty(len(self.mc_std_u), 0)
        return dataclasses.replace(self, probs_val=cut(self.probs_val), probs_u=cut(self.probs_u),
                                   probs_test=cut(self.probs_test), mc_std_u=empty,
                                   features_u=empty.clone(), teacher_topk=k)

    def problem(self) -> Optional[str]:
        """None when the outputs are usable, else what is wrong (non-finite values, rows off
        the simplex (above it, for top-K rows), accuracies outside [0, 1])."""
        for k in self._TENSORS:
            t = getattr(self, k)
            if isinstance(t, TopKProbs):
                try:
                    t.check(k)
                except (TypeError, ValueError) as e:
                    return str(e)
            elif not bool(torch.isfinite(t).all()):
                return f"{k} holds NaN or inf"
        for k in _PROBS:
            t = getattr(self, k)
            if isinstance(t, TopKProbs):
                continue  # checked above: finite, non-negative, rows summing to at most 1
            if len(t) and (bool((t < 0).any()) or float((t.sum(1) - 1).abs().max()) > 1e-3):
                return f"{k} has rows that are not probability vectors"
        for k in ("test_acc", "val_acc"):
            if not 0.0 <= getattr(self, k) <= 1.0:  # NaN fails too
                return f"{k} = {getattr(self, k)} is not an accuracy"
        return None

    def to_state(self) -> dict:
        state = {k: getattr(self, k) for k in (*self._TENSORS, *_SCALARS)}
        for k in _PROBS:
            t = state[k]
            if isinstance(t, TopKProbs):
                state[k] = {"ids": t.ids, "probs": t.probs, "num_classes": t.num_classes}
        if self.teacher_topk is not None:
            state["teacher_topk"] = self.teacher_topk
        state["checksum"] = self.checksum()
        return state

    @classmethod
    def from_state(cls, state: Mapping) -> "TeacherOutputs":
        values = {k: state[k] for k in (*_SCALARS, *cls._TENSORS)}
        for k in _PROBS:
            if isinstance(values[k], Mapping):
                values[k] = TopKProbs(**values[k])
        return cls(**values, teacher_topk=state.get("teacher_topk"))


def teacher_key(dataset_id: Mapping, split: Split, labeled_size: int, n_val: int,
                max_unlabeled: Optional[int], model: ModelSpec, train: TrainSpec, seed: int,
                mc_passes: int) -> str:
    return stable_hash({"dataset": dataset_id, "labeled_size": labeled_size, "n_val": n_val,
                        "max_unlabeled": max_unlabeled, "split_seed": split.split_seed,
                        "model": model, "train": train, "seed": seed, "mc_passes": mc_passes,
                        "version": PIPELINE_VERSION})


def labeled_av_split(split: Split) -> Split:
    """The split of the A + V reference (`vanilla_av`): V's labels spent on training, so the
    labeled set is A and V together (sorted, (|A| + |V|,) int64); V and U stay as they are
    (V is then inside the training set, so the teacher's V accuracy is not held out)."""
    return Split(torch.cat([split.a, split.v]).sort().values, split.v, split.u, split.split_seed)


def derived_key(key: str, **what) -> str:
    """The cache key of a teacher derived from the trial's teacher of key `key` (the A + V
    teacher, a cross-fitting fold's teacher): the trial's key plus what differs."""
    return stable_hash({"trained_key": key, **what})


_REBUILD = ("delete that file to have this teacher retrained on the next run, or rerun with "
            "--force to recompute every teacher and row of the suite")


def load_cached(path: Path, key: str) -> Optional[TeacherOutputs]:
    """The cached outputs at `path`; None if absent or written before checksums existed;
    CacheError (naming the file and how to rebuild it) if unreadable, altered or mismatched."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        out = TeacherOutputs.from_state(state)
        recorded = state.get("checksum")
    except Exception as e:  # torch raises many types for a torn or foreign file
        raise CacheError(f"teacher cache file {path} is unreadable ({type(e).__name__}: {e}); "
                         f"{_REBUILD}") from None
    if recorded is None:
        return None  # an older cache: recomputed (and rewritten with a checksum)
    if recorded != out.checksum():
        raise CacheError(f"teacher cache file {path} does not match its checksum (its bytes were "
                         f"altered after it was written); {_REBUILD}")
    if out.key != key:
        raise CacheError(f"teacher cache file {path} holds key {out.key}, expected {key}; {_REBUILD}")
    problem = out.problem()
    if problem is not None:
        raise CacheError(f"teacher cache file {path} is unusable: {problem}; {_REBUILD}")
    return out


def teacher_outputs(ctx: DistContext, ds: Dataset, x_train: Tensor, y_train: Tensor,
                    x_test: Tensor, y_test: Tensor, split: Split, key: str, model: ModelSpec,
                    train: TrainSpec, seed: int, mc_passes: int, cache_dir: Optional[Path],
                    force: bool = False, topk: Optional[int] = None,
                    dense_key: Optional[str] = None) -> TeacherOutputs:
    """Cached teacher outputs for this split, training the teacher if needed.

    topk: keep a top-`topk` cache (module docstring) under `key`, which the caller derives
    from the dense key `dense_key`; a dense cache found under `dense_key` is cut to it instead
    of training the teacher again.

    x_*/y_* are the dataset's tensors already on `ctx.device`. Across several ranks, rank 0
    alone trains the teacher (it sees only A, which is small) and broadcasts its weights:
    ranks training their own copy could diverge through nondeterministic kernels. Inference
    on V, U and test, the expensive part, is sharded by rows and gathered on every rank. Only
    rank 0 writes the cache, in the same format whatever the number of ranks.
    """
    path = Path(cache_dir) / "teacher" / f"{key}.pt" if cache_dir is not None else None
    if path is not None and not force:
        cached = load_cached(path, key)
        if cached is not None:
            return cached
        dense = None if topk is None or dense_key is None else \
            load_cached(path.with_name(f"{dense_key}.pt"), dense_key)
        if dense is not None:
            out = dataclasses.replace(dense.to_topk(topk), key=key)
            _save(ctx, path, out)
            return out
    device = x_train.device
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    net = build_model(model.name, tuple(x_train.shape[1:]), ds.num_classes, **model.options).to(device)
    a, v, u = (i.to(device) for i in (split.a, split.v, split.u))
    steps, failure = train.steps(len(a)), None
    if ctx.is_main:
        try:
            steps = train_supervised(net, x_train[a], y_train[a], train, seed)
        except NonFiniteLoss as e:
            failure = str(e)
    # Every rank learns whether rank 0's teacher diverged, so all fail the trial together.
    failure = ctx.broadcast_object(failure)
    if failure is not None:
        raise NonFiniteLoss(failure)
    ctx.broadcast_module(net)
    probs_val = sharded_predict(ctx, net, x_train[v], topk=topk)
    if topk is None:
        probs_u, feats_u = sharded_predict(ctx, net, x_train[u], features=True)
    else:  # no features, no MC spread: the methods reading them refuse a top-K cache
        probs_u = sharded_predict(ctx, net, x_train[u], topk=topk)
        feats_u = torch.empty(len(u), 0)
    probs_test = sharded_predict(ctx, net, x_test, topk=topk)
    if topk is None:
        # MC dropout (UPS): per-class std over K passes with only the dropout layers active.
        # The ranks' passes cover different rows, so their dropout masks are seeded apart.
        torch.manual_seed(seed + 1 + 7919 * ctx.rank)
        xu = x_train[u][ctx.shard(len(u))]
        mc_std = torch.cat([mc_dropout_probs(net, xu[i:i + EVAL_BATCH], passes=mc_passes)[1]
                            for i in range(0, len(xu), EVAL_BATCH)])
        mc_std = ctx.gather_rows(mc_std, len(u))
    else:
        mc_std = torch.empty(len(u), 0)
    out = TeacherOutputs(key=key, probs_val=_cpu(probs_val), probs_u=_cpu(probs_u),
                         probs_test=_cpu(probs_test), mc_std_u=mc_std.cpu(),
                         features_u=feats_u.cpu(),
                         test_acc=accuracy(probs_test, y_test), val_acc=accuracy(probs_val, y_train[v]),
                         steps=steps, wall_s=round(time.perf_counter() - t0, 3),
                         teacher_topk=topk)
    problem = out.problem()
    if problem is not None:  # e.g. a teacher whose logits overflowed: never cached, never used
        raise NonFiniteLoss(f"the trained teacher's outputs are unusable: {problem}")
    _save(ctx, path, out)
    return out


def _cpu(p: Probs) -> Probs:
    return p.to("cpu") if isinstance(p, TopKProbs) else p.cpu()


def _save(ctx: DistContext, path: Optional[Path], out: TeacherOutputs) -> None:
    """Write the cache file (rank 0), then wait for it on every rank."""
    if path is not None and ctx.is_main:
        buf = io.BytesIO()
        torch.save(out.to_state(), buf)
        atomic_write(path, buf.getvalue())
    ctx.barrier()  # no rank looks for the cache file before rank 0 has written it


def synthetic_teacher_outputs(ds: Dataset, split: Split, mean_accuracy: float, seed: int,
                              key: str, scenario: Optional[str] = None,
                              topk: Optional[int] = None) -> TeacherOutputs:
    """The outputs of a dataset-defined teacher (`SyntheticDataset.teacher_fn`: a noise model
    with mean accuracy `mean_accuracy` on the training split, drawn with `seed`, in the named
    `scenario` where one is given), in the form a trained teacher's outputs take.

    It has no network: its MC-dropout std is 0 (UPS then selects on probabilities alone) and
    its "features" on U are its probabilities. Drawing it is cheap, so it is not cached.
    topk: its top-`topk` outputs (`TeacherOutputs.to_topk`); a dataset whose teacher draws
    top-K rows itself (`SyntheticDataset.sparse_teacher`) is asked for them directly, so its
    dense rows never exist.
    """
    fn = getattr(ds, "teacher_fn", None)
    if fn is None:
        raise ValueError(f"dataset {ds.name!r} defines no teacher of its own; remove the suite's "
                         f"teacher_accuracy to train a teacher on A")
    t0 = time.perf_counter()
    args = (mean_accuracy, seed) if scenario is None else (mean_accuracy, seed, scenario)
    sparse = topk is not None and getattr(ds, "sparse_teacher", False)
    teacher = fn(*args, topk=topk) if sparse else fn(*args)

    def rows(p, index):
        return p.rows(index) if isinstance(p, TopKProbs) else p[index]

    probs_u = rows(teacher.probs_train, split.u)
    probs_val = rows(teacher.probs_train, split.v)
    empty = torch.empty(len(split.u), 0)
    out = TeacherOutputs(key=key, probs_val=probs_val, probs_u=probs_u,
                         probs_test=teacher.probs_test,
                         mc_std_u=empty if sparse else torch.zeros_like(probs_u),
                         features_u=empty.clone() if sparse else probs_u.clone(),
                         test_acc=accuracy(teacher.probs_test, ds.y_test),
                         val_acc=accuracy(probs_val, ds.y_train[split.v]), steps=0,
                         wall_s=round(time.perf_counter() - t0, 3),
                         alpha_true_u=teacher.alpha_train[split.u],
                         params={"teacher_accuracy_target": mean_accuracy, **teacher.params},
                         teacher_topk=topk if sparse else None)
    return out if topk is None or sparse else out.to_topk(topk)


def crossfit_probs(ctx: DistContext, ds: Dataset, x_train: Tensor, y_train: Tensor,
                   x_test: Tensor, y_test: Tensor, split: Split, key: str, model: ModelSpec,
                   train: TrainSpec, seed: int, mc_passes: int, cache_dir: Optional[Path],
                   k: int, force: bool = False) -> Tensor:
    """Out-of-fold teacher probabilities on A, (|A|, C) float32 CPU, row i for split.a[i].

    A is cut into k folds (`splits.crossfit_folds`, seeded by the split seed); the j-th teacher
    (same model, training numbers and seed as the trial's teacher) trains on A minus fold j
    and predicts fold j, so every row comes from a teacher that never saw that example. Each
    fold's teacher is trained and cached like the trial's own (`teacher_outputs`, key derived
    from `key`, fold j's V and U both being the fold). The estimators fitted on these rows and
    A's labels spend no label beyond A; they describe teachers trained on (k-1)/k of A, a
    little weaker than the one that labels U.
    """
    probs = None
    for j, fold in enumerate(crossfit_folds(split.a, k, split.split_seed)):
        rest = split.a[~torch.isin(split.a, fold)]
        out = teacher_outputs(ctx, ds, x_train, y_train, x_test, y_test,
                              Split(rest, fold, fold, split.split_seed),
                              derived_key(key, crossfit_folds=k, fold=j), model, train, seed,
                              mc_passes, cache_dir, force=force)
        if probs is None:
            probs = torch.empty(len(split.a), out.probs_val.shape[1])
        probs[torch.searchsorted(split.a, fold)] = out.probs_val
    return probs
