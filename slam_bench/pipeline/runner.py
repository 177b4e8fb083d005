"""Run one suite: for each labeled size and trial, split, teacher, then every method.

Trial t uses split seed SPLIT_SEED_BASE + t and train seed TRAIN_SEED_BASE + t: the split and
the training randomness are separate streams. Each finished (trial, method) row is recorded
atomically before the next starts, and rows already recorded with the same config hash are
skipped, so a killed run resumes where it stopped.

The same loop runs in one process or across DDP ranks (`slam_bench.cli.ddp` launches it
under torchrun); a `DistContext` marks the only places where they differ: the teacher is
trained on rank 0 and broadcast, its inference and the test prediction are sharded by rows and
gathered, the student is wrapped in DDP with each rank taking `[rank::world]` of every global
batch, and only rank 0 writes files. With one process every one of those is an identity, so
results do not depend on whether a run went through this module or through torchrun with one
rank, and a DDP run's rows and teacher cache are interchangeable with a single-process run's.
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import torch

from slam_bench.data import load_dataset
from slam_bench.distributed import DistContext
from slam_bench.models import build_model
from slam_bench.pipeline import methods as M
from slam_bench.pipeline.hashing import PIPELINE_VERSION, stable_hash, tensor_digest
from slam_bench.pipeline.results import (done_keys, prune_rows, read_rows, record_row, runs_path)
from slam_bench.pipeline.splits import make_split, save_split
from slam_bench.pipeline.suites import Suite
from slam_bench.pipeline.teacher import synthetic_teacher_outputs, teacher_key, teacher_outputs
from slam_bench.pipeline.train import StudentStep, accuracy, sharded_predict, train_student

SPLIT_SEED_BASE = 0
TRAIN_SEED_BASE = 1000


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
        top1 = teacher.probs_u.argmax(dim=1, keepdim=True)
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


def run_suite(suite: Suite, out: Path, *, smoke: bool = False, device: str = "auto",
              data_root: Optional[Path] = None, force: bool = False, prune: bool = False,
              progress: bool = False, log: Callable[[str], None] = lambda s: None,
              cpu_threads: Optional[int] = 1, ctx: Optional[DistContext] = None) -> Path:
    """Run `suite` (its smoke or full sizes), recording rows in <out>/runs/<suite>.csv.

    force: recompute rows and teachers even if recorded/cached. prune: afterwards drop rows of
    this suite that the current configuration did not produce (a full rewrite of the file).
    cpu_threads: torch intra-op threads while the suite runs on CPU (restored afterwards);
    these models are so small that extra threads only add synchronisation, which is ruinous
    on a shared machine (measured 20x slower per step with 2 threads than with 1 under load).
    None leaves torch's setting alone. ctx: this process's place in a DDP job (its device is
    used, so `device` must stay "auto"); None runs in one process on `device`. Returns the
    runs CSV path (on every rank).
    """
    if ctx is None:
        ctx = DistContext.single(resolve_device(device))
    elif device != "auto":
        raise ValueError(f"device must be 'auto' when a DistContext is given (each rank uses "
                         f"ctx.device), got {device!r}")
    previous = torch.get_num_threads()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    try:
        return _run_suite(ctx, suite, out, smoke, data_root, force, prune, progress, log)
    finally:
        torch.set_num_threads(previous)


def _run_suite(ctx: DistContext, suite, out, smoke, data_root, force, prune, progress, log) -> Path:
    sizes = suite.sizes(smoke)
    dev = ctx.device
    # A run is (method, targets): every method on soft labels, suite.hard_methods on hard ones.
    runs = suite.runs()
    methods = {name: M.get_method(name) for name, _ in runs}
    hps = {(name, t): methods[name].hparams({**suite.method_options.get(name, {}),
                                              **({"targets": t} if methods[name].trains_student
                                                 else {})})
           for name, t in runs}
    for name in suite.method_options:
        M.get_method(name)  # an override for an unknown method is a config error
    ds = load_dataset(suite.dataset, data_root, **suite.dataset_options)
    dataset_id = {"name": ds.name, "options": dict(suite.dataset_options),
                  "digest": tensor_digest(ds.x_train, ds.y_train, ds.x_test, ds.y_test)}
    # The loader's options and scalar facts (e.g. a synthetic set's Bayes accuracy), logged.
    meta_json = json.dumps({**dict(suite.dataset_options),
                            **{k: v for k, v in ds.meta.items()
                               if isinstance(v, (int, float, str, bool))}}, sort_keys=True)
    out = Path(out)
    csv_path = runs_path(out, suite.name)
    done = set() if force else done_keys(read_rows(csv_path))
    ctx.barrier()  # every rank has read the rows before rank 0 starts adding to them
    x_train, y_train = ds.x_train.to(dev), ds.y_train.to(dev)
    x_test, y_test = ds.x_test.to(dev), ds.y_test.to(dev)
    input_shape = tuple(ds.x_train.shape[1:])
    trials = plan(suite, smoke)
    common_cfg = {"dataset": dataset_id, "n_val": sizes.n_val, "max_unlabeled": sizes.max_unlabeled,
                  "teacher_model": suite.teacher_model, "teacher_train": sizes.teacher,
                  "mc_passes": sizes.mc_passes, "student_model": suite.student_model,
                  "student_train": sizes.student, "labeled_weight": suite.labeled_weight,
                  "labeled_weighting": suite.labeled_weighting, "version": PIPELINE_VERSION}
    teacher_acc = dict(zip(sizes.labeled_sizes, sizes.teacher_accuracy or ()))
    device_label = f"{dev} (ddp x{ctx.world_size})" if ctx.distributed else str(dev)
    keep: Set[Tuple] = set()
    bar = _progress(len(trials) * len(runs), suite.name, progress and ctx.is_main)
    try:
        for labeled, split_seed, train_seed in trials:
            split = make_split(len(ds.y_train), labeled, sizes.n_val, split_seed, sizes.max_unlabeled)
            cfg_hash = {r: stable_hash({**common_cfg, "labeled_size": labeled, "method": r[0],
                                        "hp": hps[r],
                                        **({"teacher_accuracy": teacher_acc[labeled]}
                                           if teacher_acc else {})}) for r in runs}
            ids = {r: (ds.name, str(labeled), str(split_seed), str(train_seed), *r) for r in runs}
            keep.update((*ids[r], cfg_hash[r]) for r in runs)
            pending = [r for r in runs if (*ids[r], cfg_hash[r]) not in done]
            bar.update(len(runs) - len(pending))
            if not pending:
                continue
            if ctx.is_main:
                save_split(split, out / "runs" / "splits" / suite.name /
                           f"{ds.name}_labeled{labeled}_split{split_seed}.npz")
            tkey = teacher_key(dataset_id, split, labeled, sizes.n_val, sizes.max_unlabeled,
                               suite.teacher_model, sizes.teacher, train_seed, sizes.mc_passes)
            if teacher_acc:  # the dataset's own teacher, a noise model of this accuracy
                tkey = stable_hash({"trained_key": tkey, "accuracy": teacher_acc[labeled]})
                teacher = synthetic_teacher_outputs(ds, split, teacher_acc[labeled], train_seed,
                                                    tkey)
            else:
                teacher = teacher_outputs(ctx, ds, x_train, y_train, x_test, y_test, split, tkey,
                                          suite.teacher_model, sizes.teacher, train_seed,
                                          sizes.mc_passes, out / "cache", force=force)
            base = {
                "suite": suite.name, "dataset": ds.name, "dataset_meta": meta_json,
                "labeled_size": labeled,
                "n_unlabeled": len(split.u), "n_val": len(split.v), "n_test": len(ds.y_test),
                "split_seed": split_seed, "train_seed": train_seed,
                "teacher_arch": suite.teacher_model.describe(),
                "student_arch": suite.student_model.describe(),
                "teacher_test_acc": round(teacher.test_acc, 6),
                "teacher_val_acc": round(teacher.val_acc, 6), "teacher_key": tkey,
                "teacher_steps": teacher.steps,
                "teacher_train": "none (noise model)" if teacher_acc else _describe(sizes.teacher),
                "labeled_weight": suite.labeled_weight,
                "labeled_weighting": suite.labeled_weighting,
                "weight_decay": sizes.student.weight_decay,
                "selection": "last", "device": device_label, "git_sha": git_sha(),
                "mc_passes": sizes.mc_passes, **teacher.params,
            }
            for r in pending:
                m, t0 = methods[r[0]], time.perf_counter()
                row = {**base, "method": m.name, "targets": r[1], "config_hash": cfg_hash[r]}
                row.update({k: _loggable(v) for k, v in hps[r].items()})
                if m.trains_student:
                    acc, steps, params = _run_student(ctx, m, hps[r], ds, split, teacher,
                                                      x_train, y_train, x_test, y_test,
                                                      input_shape, suite, sizes, train_seed)
                    row.update(params)
                    row.update(epochs=sizes.student.epochs, steps=steps,
                               batch_size=sizes.student.batch_size, lr=sizes.student.lr,
                               optimizer=sizes.student.optimizer, test_acc=round(acc, 6),
                               wall_s=round(time.perf_counter() - t0, 3))
                else:  # the teacher row reports the teacher itself
                    row.update(epochs=sizes.teacher.epochs, steps=teacher.steps,
                               batch_size=sizes.teacher.batch_size, lr=sizes.teacher.lr,
                               optimizer=sizes.teacher.optimizer,
                               test_acc=round(teacher.test_acc, 6), wall_s=teacher.wall_s)
                if ctx.is_main:
                    record_row(csv_path, row)
                    log(f"{suite.name} {ds.name} labeled={labeled} split={split_seed} "
                        f"{m.name} ({r[1]}): test_acc={row['test_acc']:.4f}")
                bar.update(1)
    finally:
        bar.close()
    if prune and ctx.is_main:
        prune_rows(csv_path, keep)
    ctx.barrier()  # the rows are complete before any rank goes on to read them
    return csv_path


def _run_student(ctx: DistContext, method: M.Method, hp: dict, ds, split, teacher, x_train,
                 y_train, x_test, y_test, input_shape, suite: Suite, sizes, train_seed: int):
    """Fit the method on V, train its student on A and U; returns (test acc, steps, params).

    The estimators fit on the teacher's soft probabilities; the loss sees the targets hp
    asks for (`M.loss_targets`: soft, or their one-hot argmax). params adds to the method's
    fitted values `student_fit_u` (the student's agreement with the teacher's argmax on U:
    whether it could fit, and so memorise, the teacher's labels) and, for datasets that know
    the best model of the student's class, `best_test_error` and `student_err_vs_best` (the
    student's disagreement with that model's test predictions).
    """
    dev = ctx.device
    probs_u = teacher.probs_u.to(dev)
    targets_u = M.loss_targets(probs_u, hp)
    feats_u = teacher.features_u.to(dev)
    torch.manual_seed(train_seed)
    student = build_model(suite.student_model.name, input_shape, ds.num_classes,
                          **suite.student_model.options).to(dev)
    fctx = M.FitContext(probs_val=teacher.probs_val.to(dev), y_val=y_train[split.v.to(dev)],
                        probs_u=probs_u, mc_std_u=teacher.mc_std_u.to(dev),
                        num_classes=ds.num_classes, teacher_feature_dim=feats_u.shape[1],
                        student_feature_dim=student.feature_dim, hp=hp)
    fitted = method.fit(fctx)
    params = dict(fitted.params)
    params.update(_alpha_truth(ds, split, teacher, fitted))
    per_example = {k: v.to(dev) for k, v in fitted.per_example.items()}

    def unlabeled_loss(idx, logits, feats):
        batch = M.Batch(index=idx, logits=logits, features=feats, teacher_probs=targets_u[idx],
                        teacher_features=feats_u[idx],
                        extra={k: v[idx] for k, v in per_example.items()}, fitted=fitted, hp=hp)
        return method.loss(batch)

    a, u = split.a.to(dev), split.u.to(dev)
    step = StudentStep(student, fitted.module, unlabeled_loss, suite.labeled_weight,
                       suite.labeled_weighting)
    steps = train_student(ctx, step, x_train[a], y_train[a], x_train[u], sizes.student, train_seed)
    pred_u = sharded_predict(ctx, student, x_train[u]).argmax(dim=1)
    params["student_fit_u"] = round(float((pred_u == probs_u.argmax(dim=1)).float().mean()), 6)
    probs_test = sharded_predict(ctx, student, x_test)
    best = getattr(ds, "best_test_pred", None)
    if best is not None:
        best = best.to(dev)
        params["best_test_error"] = round(float((best != y_test).float().mean()), 6)
        params["student_err_vs_best"] = round(float((probs_test.argmax(dim=1) != best).float().mean()), 6)
    return accuracy(probs_test, y_test), steps, params


def _describe(t) -> str:
    return (f"{t.optimizer} lr={t.lr:g} wd={t.weight_decay:g} bs={t.batch_size} "
            f"epochs={t.epochs} min_steps={t.min_steps}")


def _loggable(v):
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return "x".join(str(i) for i in v)
    return v


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int, name: str, enabled: bool):
    """A tqdm bar on an interactive terminal, nothing otherwise."""
    if not (enabled and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="run", leave=False)
