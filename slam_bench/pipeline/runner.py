"""Run one suite: for each labeled size and trial, split, teacher, then every method.

Trial t uses split seed SPLIT_SEED_BASE + t and train seed TRAIN_SEED_BASE + t: the split and
the training randomness are separate streams. Each finished (trial, method) row is recorded
atomically before the next starts, and rows already recorded with the same config hash are
skipped, so a killed run resumes where it stopped. A trial whose training loss turns
non-finite fails whole: its rows (all trained on the same teacher outputs) are removed, the
run goes on with the next trial, and `TrialsFailed` lists the failures at the end.

Within a trial the methods share the teacher outputs they read (`_Teachers`): the trial's
teacher, built once; the A + V teacher of `vanilla_av`; and the estimator data, V or (with the
suite's estimator_data "crossfit") out-of-fold predictions of K fold teachers on A. Every row
logs the labels its method saw (`labels_used`) and where its estimators fit
(`estimator_data`, `crossfit_folds`); docs/protocol.md describes the protocol.

Top-K teacher caches (`Sizes.teacher_topk`, docs/vocab.md): every trial runs its methods on
each listed teacher cache, the dense one (None) and each top-K, from the same teacher; a row
names its cache (`teacher_topk`, part of its id), its bytes (`teacher_cache_bytes`) and the
peak extra memory of one student step (`student_peak_bytes`). On a top-K cache the student's
output layer trains through the fused top-K loss, and methods that need the dense teacher are
refused before anything runs.

`shard=(i, n)` runs every n-th trial of the plan starting at the i-th (1-based): each trial
has its own teacher, so each teacher is trained by exactly one shard, and n processes (one per
GPU, or a Slurm job array) writing into one `out` produce the rows of a single run.

The same loop runs in one process or across DDP ranks (`slam_bench.cli.ddp` launches it
under torchrun); a `DistContext` marks the only places where they differ: the teacher is
trained on rank 0 and broadcast, its inference and the test prediction are sharded by rows and
gathered, the student is wrapped in DDP with each rank taking `[rank::world]` of every global
batch, and only rank 0 writes files. With one process every one of those is an identity, so
results do not depend on whether a run went through this module or through torchrun with one
rank, and a DDP run's rows and teacher cache are interchangeable with a single-process run's.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from slam_bench.allocator import keep_freed_memory
from slam_bench.data import load_dataset
from slam_bench.distributed import DistContext
from slam_bench.models import build_model
from slam_bench.pipeline import methods as M
from slam_bench.pipeline.hashing import PIPELINE_VERSION, stable_hash, tensor_digest
from slam_bench.provenance import row_fields
from slam_bench.store import (RowId, check_store, delete_rows, done_keys, prune_rows, read_rows,
                              record_row, row_id, runs_path, topk_label)
from slam_bench.pipeline.splits import Split, make_split, save_split
from slam_bench.pipeline.suites import Suite
from slam_bench.pipeline.teacher import (TeacherOutputs, crossfit_probs, derived_key,
                                         labeled_av_split, synthetic_teacher_outputs,
                                         teacher_key, teacher_outputs)
from slam_bench.pipeline.train import (NonFiniteLoss, StudentStep, accuracy, first_batch,
                                       sharded_predict_labels, step_peak_bytes, train_student)
from slam_bench.vocab.teacher import TopKProbs, teacher_argmax

SPLIT_SEED_BASE = 0
TRAIN_SEED_BASE = 1000


class TrialsFailed(RuntimeError):
    """Some trials failed (e.g. a non-finite training loss) and recorded no rows; the others
    were recorded. `failures` holds one line per failed trial."""

    def __init__(self, csv_path: Path, failures: List[str]):
        self.failures = failures
        super().__init__(f"{len(failures)} trial(s) failed and recorded no rows in {csv_path} "
                         f"(the other trials were recorded):\n  " + "\n  ".join(failures))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


def _alpha_truth(ds, split, teacher, fitted) -> Dict[str, float]:
    """For datasets with a known truth: the error of the alpha estimate against
    alpha_true(x) = P(teacher's top-1 is the label | x) on U, for the clipped alpha the loss
    uses (`alpha_true_mae`) and the unclipped isotonic fit (`alpha_true_mae_raw`). The truth
    is the synthetic teacher's own alpha where it has one, else p(y = teacher's top-1 | x)
    from the dataset's posterior."""
    post = getattr(ds, "posterior_train", None)
    if "alpha" not in fitted.per_example or (post is None and teacher.alpha_true_u is None):
        return {}
    if teacher.alpha_true_u is not None:
        truth = teacher.alpha_true_u.float()
    else:
        top1 = teacher_argmax(teacher.probs_u)[:, None]
        truth = post[split.u].gather(1, top1).squeeze(1).float()
    out = {"alpha_true_mean": round(float(truth.mean()), 6),
           "alpha_true_mae": round(float((fitted.per_example["alpha"].cpu() - truth).abs().mean()), 6)}
    if "alpha_raw" in fitted.state:
        out["alpha_true_mae_raw"] = round(float((fitted.state["alpha_raw"].cpu() - truth).abs().mean()), 6)
    return out


def plan(suite: Suite, smoke: bool) -> List[Tuple[int, int, int]]:
    """(labeled_size, split_seed, train_seed) for every trial of the suite."""
    sizes = suite.sizes(smoke)
    return [(n, SPLIT_SEED_BASE + t, TRAIN_SEED_BASE + t)
            for n in sizes.labeled_sizes for t in range(sizes.trials)]


def split_path(out: Path, suite: str, dataset: str, labeled: int, split_seed: int,
               variant: str) -> Path:
    """Where a trial's split indices are saved. Smoke splits (other |V| and |U| cap) go to their
    own folder, so a smoke run never overwrites the split a full row was trained on."""
    folder = Path(out) / "runs" / "splits" / suite
    if variant == "smoke":
        folder = folder / "smoke"
    return folder / f"{dataset}_labeled{labeled}_split{split_seed}.npz"


def check_shard(shard: Optional[Tuple[int, int]]) -> None:
    if shard is None:
        return
    ok = (isinstance(shard, tuple) and len(shard) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in shard))
    if not ok or not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"shard must be (i, n) with 1 <= i <= n, got {shard!r}")


def shard_of(trials: List[Tuple[int, int, int]], shard: Optional[Tuple[int, int]]):
    """Shard i of n (1-based) of a plan: trials i-1, i-1+n, i-1+2n, ... Round robin over the
    size-major plan, so every shard gets a similar mix of labeled sizes (similar run time);
    the n shards are disjoint and together are the plan, and a trial is one teacher."""
    check_shard(shard)
    if shard is None:
        return list(trials)
    i, n = shard
    return list(trials)[i - 1::n]


def run_suite(suite: Suite, out: Path, *, smoke: bool = False, device: str = "auto",
              data_root: Optional[Path] = None, force: bool = False, prune: bool = False,
              progress: bool = False, log: Callable[[str], None] = lambda s: None,
              cpu_threads: Optional[int] = 1, ctx: Optional[DistContext] = None,
              shard: Optional[Tuple[int, int]] = None,
              hp_overrides: Optional[Mapping[str, Mapping]] = None) -> Path:
    """Run `suite` (its smoke or full sizes), recording rows in <out>/runs/<suite>.csv.

    force: recompute rows and teachers even if recorded/cached. prune: afterwards drop rows of
    this suite and variant that the current configuration did not produce (all shards' rows
    count as produced). log: receives one line per finished trial (and one at the start);
    progress: also show a progress bar when stdout is a terminal (the lines then go above it).
    shard: (i, n) runs only shard i of n of the plan (`shard_of`). hp_overrides: {method:
    {name: value}} applied over the registry's defaults (a sweep's grid point, never a suite's).
    cpu_threads: torch intra-op threads while the suite runs on CPU (restored afterwards);
    these models are so small that extra threads only add synchronisation, which is ruinous
    on a shared machine (measured 20x slower per step with 2 threads than with 1 under load).
    None leaves torch's setting alone. ctx: this process's place in a DDP job (its device is
    used, so `device` must stay "auto"); None runs in one process on `device`. Returns the
    runs CSV path (on every rank). On CPU, a suite with `keep_freed_memory` first makes glibc
    keep freed memory in this process (slam_bench.allocator: process-wide, results unchanged).
    """
    check_shard(shard)
    if ctx is None:
        ctx = DistContext.single(resolve_device(device))
    elif device != "auto":
        raise ValueError(f"device must be 'auto' when a DistContext is given (each rank uses "
                         f"ctx.device), got {device!r}")
    if ctx.device.type == "cpu" and suite.keep_freed_memory:
        keep_freed_memory()
    previous = torch.get_num_threads()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    try:
        return _run_suite(ctx, suite, out, smoke, data_root, force, prune, progress, log, shard,
                          hp_overrides or {})
    finally:
        torch.set_num_threads(previous)


def _run_suite(ctx: DistContext, suite, out, smoke, data_root, force, prune, progress, log,
               shard, hp_overrides) -> Path:
    sizes = suite.sizes(smoke)
    dev = ctx.device
    # A run is (method, targets): every method on soft labels, suite.hard_methods on hard ones.
    runs = suite.runs()
    methods = {name: M.get_method(name) for name, _ in runs}
    # Every student method gets the suite's student_options (the same for all of them,
    # checked at registration) and its targets; everything else is its registry default,
    # except a sweep's `hp_overrides` (one method's grid value, rows tagged by the sweep).
    hps = {(name, t): methods[name].hparams({**suite.student_options, **hp_overrides.get(name, {}),
                                             "targets": t}
                                            if methods[name].trains_student else {})
           for name, t in runs}
    topks = sizes.teacher_topk
    for k in topks:  # a method that needs the dense teacher is refused before anything runs
        for name in methods:
            if k is not None:
                methods[name].check_topk(k)
    # The rows first: an invalid results file stops the run before the data is loaded.
    out = Path(out)
    csv_path = runs_path(out, suite.name)
    # The whole store (every suite's file, methods known), even under --force, which rewrites.
    check_store(out, M.METHODS)
    recorded = read_rows(csv_path, known_methods=M.METHODS)
    done = set() if force else done_keys(recorded)
    ctx.barrier()  # every rank has read the rows before rank 0 starts adding to them
    options = {**suite.dataset_options, **sizes.dataset_options}
    ds = load_dataset(suite.dataset, data_root, **options)
    too_many = [k for k in topks if k is not None and k > ds.num_classes]
    if too_many:
        raise ValueError(f"teacher_topk {too_many} exceeds the C = {ds.num_classes} classes of "
                         f"dataset {ds.name!r}; K = C keeps every class")
    dataset_id = {"name": ds.name, "options": options,
                  "digest": tensor_digest(ds.x_train, ds.y_train, ds.x_test, ds.y_test)}
    # The loader's options and scalar facts (e.g. a synthetic set's Bayes accuracy), logged.
    meta_json = json.dumps({**options,
                            **{k: v for k, v in ds.meta.items()
                               if isinstance(v, (int, float, str, bool))}}, sort_keys=True)
    x_train, y_train = ds.x_train.to(dev), ds.y_train.to(dev)
    x_test, y_test = ds.x_test.to(dev), ds.y_test.to(dev)
    input_shape = tuple(ds.x_train.shape[1:])
    trials = plan(suite, smoke)
    mine = shard_of(trials, shard)
    variant = "smoke" if smoke else "full"
    common_cfg = {"dataset": dataset_id, "n_val": sizes.n_val, "max_unlabeled": sizes.max_unlabeled,
                  "teacher_model": suite.teacher_model, "teacher_train": sizes.teacher,
                  "mc_passes": sizes.mc_passes, "student_model": suite.student_model,
                  "student_train": sizes.student, "labeled_weight": suite.labeled_weight,
                  "labeled_weighting": suite.labeled_weighting, "version": PIPELINE_VERSION,
                  "estimator_data": suite.estimator_data,
                  # K only matters (and only changes the rows' hash) when cross-fitting.
                  **({"crossfit_folds": suite.crossfit_folds}
                     if suite.estimator_data == "crossfit" else {})}
    # Noise-model suites: the dataset's own teacher, of this accuracy per labeled size.
    teacher_acc = dict(zip(sizes.labeled_sizes, sizes.teacher_accuracy or ()))
    # ... and of this named scenario (hashed only where a suite names one).
    scenario = dict(zip(sizes.labeled_sizes, sizes.teacher_scenario or ()))
    # A top-K cache (and the fused layer's chunking) enters only its own rows' hash, so the
    # dense rows keep the hash they had before top-K caches existed.
    cfg_hash = {(n, r, k): stable_hash({**common_cfg, "labeled_size": n, "method": r[0],
                                        "hp": hps[r],
                                        **({"teacher_accuracy": teacher_acc[n]}
                                           if teacher_acc else {}),
                                        **({"teacher_scenario": scenario[n]} if scenario else {}),
                                        **({"teacher_topk": k,
                                            "fused_chunk_rows": sizes.fused_chunk_rows}
                                           if k is not None else {})})
                for n in sizes.labeled_sizes for r in runs for k in topks}

    def id_row(labeled: int, split_seed: int, train_seed: int, r: Tuple[str, str],
               topk: Optional[int]) -> dict:
        # Every id column of the row (results.ID_COLUMNS), plus the run's hyper-parameters.
        return {"suite": suite.name, "variant": variant, "dataset": ds.name,
                "labeled_size": labeled, "split_seed": split_seed, "train_seed": train_seed,
                **{k: _loggable(v) for k, v in hps[r].items()}, "method": r[0], "targets": r[1],
                "teacher_topk": topk_label(topk)}

    def trial_ids(labeled, split_seed, train_seed) -> Dict[Tuple, RowId]:
        return {(r, k): row_id(id_row(labeled, split_seed, train_seed, r, k))
                for k in topks for r in runs}

    # Every trial of the plan counts as produced, whichever shard runs it (for --prune).
    keep = {(rid, cfg_hash[(t[0], *rk)]) for t in trials for rk, rid in trial_ids(*t).items()}
    device_label = f"{dev} (ddp x{ctx.world_size})" if ctx.distributed else str(dev)
    report = _Report(suite.name, variant, len(mine), len(trials), shard, progress and ctx.is_main,
                     log if ctx.is_main else (lambda s: None))
    failures: List[str] = []
    try:
        for labeled, split_seed, train_seed in mine:
            t_trial = time.perf_counter()
            split = make_split(len(ds.y_train), labeled, sizes.n_val, split_seed, sizes.max_unlabeled)
            ids = trial_ids(labeled, split_seed, train_seed)
            pending = {k: [r for r in runs if (ids[(r, k)], cfg_hash[(labeled, r, k)]) not in done]
                       for k in topks}
            if not any(pending.values()):
                report.skipped()
                continue
            accs: Dict[str, float] = {}
            try:
                if ctx.is_main:
                    save_split(split, split_path(out, suite.name, ds.name, labeled, split_seed,
                                                 variant))
                tkey = teacher_key(dataset_id, split, labeled, sizes.n_val, sizes.max_unlabeled,
                                   suite.teacher_model, sizes.teacher, train_seed, sizes.mc_passes)
                if teacher_acc:  # the dataset's own teacher, a noise model of this accuracy
                    tkey = stable_hash({"trained_key": tkey, "accuracy": teacher_acc[labeled],
                                        **({"scenario": scenario[labeled]} if scenario else {})})
                for topk in topks:
                    if not pending[topk]:
                        continue
                    if teacher_acc:
                        teacher = synthetic_teacher_outputs(ds, split, teacher_acc[labeled],
                                                            train_seed, tkey,
                                                            scenario.get(labeled), topk=topk)
                    else:
                        teacher = teacher_outputs(ctx, ds, x_train, y_train, x_test, y_test, split,
                                                  _topk_key(tkey, topk), suite.teacher_model,
                                                  sizes.teacher, train_seed, sizes.mc_passes,
                                                  out / "cache", force=force, topk=topk,
                                                  dense_key=tkey)
                    teachers = _Teachers(ctx, ds, x_train, y_train, x_test, y_test, split, tkey,
                                         teacher, suite, sizes, teacher_acc.get(labeled),
                                         train_seed, out / "cache", force, topk)
                    base = {
                        "suite": suite.name, "variant": variant, "dataset": ds.name,
                        "dataset_meta": meta_json, "labeled_size": labeled,
                        "n_unlabeled": len(split.u), "n_val": len(split.v),
                        "n_test": len(ds.y_test),
                        "split_seed": split_seed, "train_seed": train_seed,
                        "teacher_arch": suite.teacher_model.describe(),
                        "student_arch": suite.student_model.describe(),
                        "teacher_test_acc": round(teacher.test_acc, 6),
                        "teacher_val_acc": round(teacher.val_acc, 6), "teacher_key": teacher.key,
                        "teacher_steps": teacher.steps,
                        "teacher_train": ("none (noise model)" if teacher_acc
                                          else _describe(sizes.teacher)),
                        "labeled_weight": suite.labeled_weight,
                        "labeled_weighting": suite.labeled_weighting,
                        "weight_decay": sizes.student.weight_decay,
                        "selection": "last", "device": device_label, **row_fields(),
                        "mc_passes": sizes.mc_passes, **teacher.params,
                        "estimator_data": suite.estimator_data,
                        # A named teacher scenario (known_noise's stress cells) names its cell.
                        **({"teacher_scenario": scenario[labeled]} if scenario else {}),
                        "teacher_cache_bytes": teacher.cache_bytes(),
                        **({"fused_chunk_rows": sizes.fused_chunk_rows}
                           if topk is not None else {}),
                    }
                    for r in pending[topk]:
                        m, t0 = methods[r[0]], time.perf_counter()
                        row = {**base, **id_row(labeled, split_seed, train_seed, r, topk),
                               "config_hash": cfg_hash[(labeled, r, topk)],
                               "labels_used": m.labels_used(len(split.a), len(split.v),
                                                            suite.estimator_data)}
                        if m.trains_student:
                            row.update(teachers.describe(m))
                            acc, steps, params = _run_student(ctx, m, hps[r], ds, split, teachers,
                                                              x_train, y_train, x_test, y_test,
                                                              input_shape, suite, sizes,
                                                              train_seed)
                            row.update(params)
                            row.update(epochs=sizes.student.epochs, steps=steps,
                                       batch_size=sizes.student.batch_size, lr=sizes.student.lr,
                                       optimizer=sizes.student.optimizer,
                                       lr_schedule=sizes.student.lr_schedule,
                                       test_acc=round(acc, 6),
                                       wall_s=round(time.perf_counter() - t0, 3))
                        else:  # the teacher row reports the teacher itself
                            row.update(epochs=sizes.teacher.epochs, steps=teacher.steps,
                                       batch_size=sizes.teacher.batch_size, lr=sizes.teacher.lr,
                                       optimizer=sizes.teacher.optimizer,
                                       lr_schedule=sizes.teacher.lr_schedule,
                                       test_acc=round(teacher.test_acc, 6), wall_s=teacher.wall_s)
                        if ctx.is_main:
                            record_row(csv_path, row)
                        name = m.name if r[1] == "soft" else f"{m.name}/{r[1]}"
                        accs[name if len(topks) == 1 else f"{name}@{topk_label(topk)}"] = \
                            row["test_acc"]
            except NonFiniteLoss as e:
                # Rows of this trial already recorded were trained on the same teacher outputs
                # as the one that failed: none of the trial survives (every rank gets here).
                if ctx.is_main:
                    delete_rows(csv_path, ids.values())
                failures.append(f"{ds.name}_{labeled} split={split_seed} train={train_seed}: {e}")
                report.failed(labeled, split_seed, train_seed, str(e))
                continue
            report.finished(labeled, split_seed, train_seed, accs, time.perf_counter() - t_trial)
    finally:
        report.close()
    if prune and ctx.is_main:
        prune_rows(csv_path, keep, variant)
    if failures:
        ctx.barrier()
        raise TrialsFailed(csv_path, failures)
    ctx.barrier()  # the rows are complete before any rank goes on to read them
    return csv_path


class _Teachers:
    """The teacher outputs a trial's methods read, each built on first use and then shared:

    - `for_method(m)`: the teacher that labels U for m: the trial's teacher (trained on A, or
      the dataset's own noise model), or for an "A+V" method a teacher trained on A + V
      (cached like the trial's); a dataset-defined teacher learns from no labels, so there the
      A + V method gets the same teacher and only its student adds V's labels.
    - `labeled(m)`: the indices of m's labeled set ((|A|,) or (|A| + |V|,) int64, CPU).
    - `estimator_data()`: what fitted methods read, (probs (n, C) float32 CPU, labels (n,)
      int64 on the device, fold teachers trained or None): V under "val"; out-of-fold
      predictions on A under "crossfit" (K fold teachers; 0 for a dataset-defined teacher,
      which never saw A, so its predictions on A are out of sample already).

    topk: the trial's teacher cache (`Sizes.teacher_topk`): every teacher output handed out is
    that top-K cache (`TopKProbs` rows), or dense for None; `key` is the dense teacher's key.
    """

    def __init__(self, ctx, ds, x_train, y_train, x_test, y_test, split, key, teacher,
                 suite: Suite, sizes, accuracy: Optional[float], seed: int, cache: Path,
                 force: bool, topk: Optional[int] = None):
        self.ctx, self.ds, self.split, self.key, self.teacher = ctx, ds, split, key, teacher
        self.data = (x_train, y_train, x_test, y_test)
        self.suite, self.sizes, self.accuracy, self.seed = suite, sizes, accuracy, seed
        self.cache, self.force, self.topk = cache, force, topk
        self._av, self._est = None, None

    def labeled(self, m: M.Method):
        return labeled_av_split(self.split).a if m.labeled_set == "A+V" else self.split.a

    def for_method(self, m: M.Method) -> TeacherOutputs:
        if m.labeled_set == "A" or self.accuracy is not None:
            return self.teacher
        if self._av is None:
            self._av = self._trained(labeled_av_split(self.split),
                                     derived_key(self.key, labeled_set="A+V"))
        return self._av

    def _trained(self, split, key) -> TeacherOutputs:
        return teacher_outputs(self.ctx, self.ds, *self.data, split, _topk_key(key, self.topk),
                               self.suite.teacher_model, self.sizes.teacher, self.seed,
                               self.sizes.mc_passes, self.cache, force=self.force,
                               topk=self.topk, dense_key=key)

    def estimator_data(self):
        y_train, split = self.data[1], self.split
        if self.suite.estimator_data == "val":
            return self.teacher.probs_val, y_train[split.v.to(y_train.device)], None
        if self._est is None:
            if self.accuracy is not None:  # the same draw of the dataset's teacher, read on A
                on_a = Split(split.a, split.a, split.u, split.split_seed)
                self._est = (synthetic_teacher_outputs(self.ds, on_a, self.accuracy, self.seed,
                                                       self.key, topk=self.topk).probs_val, 0)
            else:
                probs = crossfit_probs(self.ctx, self.ds, *self.data, split, self.key,
                                       self.suite.teacher_model, self.sizes.teacher, self.seed,
                                       self.sizes.mc_passes, self.cache, self.suite.crossfit_folds,
                                       force=self.force)
                if self.topk is not None:  # A is small: its dense rows are cut here
                    probs = TopKProbs.from_dense(probs, self.topk)
                self._est = (probs, self.suite.crossfit_folds)
        return self._est[0], y_train[split.a.to(y_train.device)], self._est[1]

    def describe(self, m: M.Method) -> dict:
        """Row values that depend on m's teacher and estimator data: an A + V teacher's own
        numbers in the teacher_* columns; for a method that fits on labels, the teacher's
        accuracy on the estimator data (`estimator_acc`) and, cross-fitting, the number of
        fold teachers (`crossfit_folds`)."""
        out = {}
        if m.labeled_set == "A+V" and self.accuracy is None:
            t = self.for_method(m)
            out.update(teacher_test_acc=round(t.test_acc, 6), teacher_val_acc=round(t.val_acc, 6),
                       teacher_key=t.key, teacher_steps=t.steps)
        if m.fits_on_labels:
            probs, labels, folds = self.estimator_data()
            out["estimator_acc"] = round(accuracy(probs, labels.cpu()), 6)
            if folds is not None:
                out["crossfit_folds"] = folds
        return out


def _run_student(ctx: DistContext, method: M.Method, hp: dict, ds, split, teachers: _Teachers,
                 x_train, y_train, x_test, y_test, input_shape, suite: Suite, sizes,
                 train_seed: int):
    """Fit the method on its estimator data, train its student on its labeled set (A, or
    A + V) and U; returns (test acc, steps, params).

    The estimators fit on the teacher's soft probabilities; the loss sees the targets hp
    asks for (`M.loss_targets`: soft, or their one-hot argmax). params adds to the method's
    fitted values `student_fit_u` (the student's agreement with the teacher's argmax on U:
    whether it could fit, and so memorise, the teacher's labels) and, for datasets that know
    the best model of the student's class, `best_test_error` and `student_err_vs_best` (the
    student's disagreement with that model's test predictions).
    """
    dev = ctx.device
    teacher = teachers.for_method(method)
    topk = teachers.topk
    probs_u = teacher.probs_u.to(dev)
    targets_u = M.loss_targets(probs_u, hp)
    feats_u = teacher.features_u.to(dev)
    torch.manual_seed(train_seed)
    student = build_model(suite.student_model.name, input_shape, ds.num_classes,
                          **suite.student_model.options).to(dev)
    # Only a method that reads labels gets them: the others fit on no labeled data at all.
    if method.fits_on_labels:
        probs_est, y_est, _ = teachers.estimator_data()
    else:
        probs_est, y_est = _rows(teacher.probs_val, slice(0, 0)), y_train[:0]
    fctx = M.FitContext(probs_val=probs_est.to(dev), y_val=y_est, probs_u=probs_u, mc_std_u=teacher.mc_std_u.to(dev),
                        num_classes=ds.num_classes, teacher_feature_dim=feats_u.shape[1],
                        student_feature_dim=student.feature_dim, hp=hp)
    fitted = method.fit(fctx)
    params = dict(fitted.params)
    params.update(_alpha_truth(ds, split, teacher, fitted))
    per_example = {k: v.to(dev) for k, v in fitted.per_example.items()}

    def unlabeled_loss(idx, logits, feats):
        batch = M.Batch(index=idx, logits=logits, features=feats,
                        teacher_probs=_rows(targets_u, idx), teacher_features=feats_u[idx],
                        extra={k: v[idx] for k, v in per_example.items()}, fitted=fitted, hp=hp,
                        head=student.head, chunk_rows=sizes.fused_chunk_rows)
        # On a top-K cache the logits are never formed: the fused loss takes the head.
        return method.loss(batch) if topk is None else method.topk_loss(batch)

    a, u = teachers.labeled(method).to(dev), split.u.to(dev)
    x_a, y_a, x_u = x_train[a], y_train[a], x_train[u]
    step = StudentStep(student, fitted.module, unlabeled_loss, suite.labeled_weight,
                       suite.labeled_weighting,
                       fused_head=None if topk is None else sizes.fused_chunk_rows)
    # One step's peak memory, on the batch training starts with; the probe leaves the step,
    # the random state and the training that follows as they were.
    params["student_peak_bytes"] = step_peak_bytes(
        step, *first_batch(step, x_a, y_a, x_u, sizes.student, train_seed))
    steps = train_student(ctx, step, x_a, y_a, x_u, sizes.student, train_seed)
    pred_u = sharded_predict_labels(ctx, student, x_u)
    params["student_fit_u"] = round(float((pred_u == teacher_argmax(probs_u)).float().mean()), 6)
    pred_test = sharded_predict_labels(ctx, student, x_test)
    best = getattr(ds, "best_test_pred", None)
    if best is not None:
        best = best.to(dev)
        params["best_test_error"] = round(float((best != y_test).float().mean()), 6)
        params["student_err_vs_best"] = round(float((pred_test != best).float().mean()), 6)
    return accuracy(pred_test, y_test), steps, params


def _rows(p, index):
    """Rows of dense (N, C) teacher probabilities or of a TopKProbs."""
    return p.rows(index) if isinstance(p, TopKProbs) else p[index]


def _topk_key(key: str, topk: Optional[int]) -> str:
    """The cache key of the top-`topk` cache cut from the teacher of `key` (itself for None)."""
    return key if topk is None else derived_key(key, teacher_topk=topk)


def _describe(t) -> str:
    return (f"{t.optimizer} lr={t.lr:g} wd={t.weight_decay:g} bs={t.batch_size} "
            f"epochs={t.epochs} min_steps={t.min_steps}")


def _loggable(v):
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return "x".join(str(i) for i in v)
    return v


def _duration(seconds: float) -> str:
    """e.g. '40 s', '7 min', '1 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class _Report:
    """What a run tells the user: one line at the start, one per finished (or failed) trial,
    written through `log`; with `bar`, a tqdm bar too when stdout is a terminal (the lines then
    go above it). Logs, CI and `| tee` see the lines as the trials finish."""

    def __init__(self, suite: str, variant: str, n_mine: int, n_plan: int, shard, bar: bool,
                 log: Callable[[str], None]):
        self.log, self.n, self.k, self.skipped_n = log, n_mine, 0, 0
        self.trained_s: List[float] = []  # wall time of each trial trained so far
        self.bar = None
        if bar and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=n_mine, desc=suite, unit="trial", leave=False)
        where = f"shard {shard[0]}/{shard[1]}: {n_mine} of {n_plan} trials" if shard else \
            f"{n_plan} trials"
        self._line(f"{suite} ({variant}): {where}")

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.log(text)

    def _step(self) -> str:
        self.k += 1
        if self.bar is not None:
            self.bar.update(1)
        return f"[{self.k}/{self.n}]"

    def skipped(self) -> None:
        self._step()
        self.skipped_n += 1

    def finished(self, labeled, split_seed, train_seed, accs: Dict[str, float], wall: float) -> None:
        cells = ", ".join(f"{m} {100 * a:.2f}" for m, a in accs.items())
        self.trained_s.append(wall)
        step = self._step()
        self._line(f"{step} labeled={labeled} split={split_seed} train={train_seed}: "
                   f"{cells} ({wall:.1f} s{self._left()})")

    def _left(self) -> str:
        """The time left if the remaining trials take the mean time of those trained so far
        (an estimate: trials of larger labeled sizes, later in the plan, can take longer)."""
        left = (self.n - self.k) * sum(self.trained_s) / len(self.trained_s)
        if self.k >= self.n:
            return ""
        return f", about {_duration(left)} left"

    def failed(self, labeled, split_seed, train_seed, reason: str) -> None:
        self._line(f"{self._step()} labeled={labeled} split={split_seed} train={train_seed}: "
                   f"FAILED, nothing recorded: {reason}")

    def close(self) -> None:
        if self.skipped_n:
            self._line(f"{self.skipped_n} trial(s) already recorded with this configuration: "
                       f"skipped (--recompute recomputes them)")
        if self.bar is not None:
            self.bar.close()
