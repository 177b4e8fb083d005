"""`slam-bench run` on several GPUs: the suite loop of `runner.run_suite` with DDP students.

    torchrun --nproc_per_node=G -m slam_bench.pipeline.ddp SUITE --data-root DIR [run options]

Takes the same arguments as `slam-bench run` and writes the same files with the same columns
(the `device` column says e.g. "cuda:0 (ddp x8)"). With one process it behaves like
`slam-bench run`. What differs from the single-process loop, and why:

- Teacher: rank 0 alone trains it (it sees only A, which is small), then its weights are
  broadcast: ranks training their own copy could diverge through nondeterministic kernels.
  Its predictions on V, U and test (and the MC-dropout passes on U) are sharded by rows
  across ranks and gathered, since inference over U is the teacher's expensive part.
  The teacher is never wrapped in DDP. Rank 0 writes the teacher cache (same key and format
  as single-process runs, so either can reuse the other's teacher).
- Student: the student (plus any module a method trains with it, e.g. VID's regressor) is
  wrapped in DDP. Every rank draws the same global batch of U and of A as the single-process
  trainer would (same generator, same seed) and takes its rank-strided share; DDP averages
  the gradients, so a step equals the single-process step on the whole batch up to BatchNorm
  using per-rank batch statistics. Global batch, steps and learning rate are unchanged.
- Only rank 0 writes split files, rows, leaderboards and plots.
This module reuses the pipeline's functions (splits, methods, cache, rows); only the loop and
the two training entry points are written here. Keep it in step with `runner.run_suite`:
tests/test_scale_suites.py checks both write the same columns.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from slam_bench.data import DatasetUnavailable, load_dataset
from slam_bench.distributed import DistContext
from slam_bench.models import build_model
from slam_bench.pipeline import cli_run
from slam_bench.pipeline import methods as M
from slam_bench.pipeline.fileio import atomic_write
from slam_bench.pipeline.hashing import PIPELINE_VERSION, stable_hash, tensor_digest
from slam_bench.pipeline.leaderboard import markdown_table
from slam_bench.pipeline.report import default_readme, regenerate
from slam_bench.pipeline.results import ResultsError, done_keys, read_rows, record_row, runs_path
from slam_bench.losses import mc_dropout_probs
from slam_bench.pipeline.runner import _alpha_truth, _describe, _loggable, git_sha, plan
from slam_bench.pipeline.splits import make_split, save_split
from slam_bench.pipeline.suites import Suite, TrainSpec, get_suite
from slam_bench.pipeline.teacher import CacheError, TeacherOutputs, load_cached, teacher_key
from slam_bench.pipeline.train import (EVAL_BATCH, _Batches, accuracy, make_optimizer, predict,
                                      train_supervised)

# Collectives wait this long for a slow rank (rank 0 trains the teacher while the others wait).
TIMEOUT_S = 4 * 3600


def sharded_predict(ctx: DistContext, model: nn.Module, x: Tensor, *, features: bool = False):
    """`predict` over rows of x split across ranks; every rank gets the full result."""
    if len(x) < ctx.world_size:
        raise ValueError(f"cannot shard {len(x)} rows over {ctx.world_size} ranks")
    rows = ctx.shard(len(x))
    out = predict(model, x[rows], features=features)
    if features:
        return ctx.gather_rows(out[0], len(x)), ctx.gather_rows(out[1], len(x))
    return ctx.gather_rows(out, len(x))


@torch.no_grad()
def sharded_mc_std(ctx: DistContext, model: nn.Module, x: Tensor, passes: int) -> Tensor:
    """Per-class std over `passes` MC-dropout passes (`losses.mc_dropout_probs`), row-sharded."""
    mine = x[ctx.shard(len(x))]
    std = torch.cat([mc_dropout_probs(model, mine[i:i + EVAL_BATCH], passes=passes)[1]
                     for i in range(0, len(mine), EVAL_BATCH)])
    return ctx.gather_rows(std, len(x))


def _broadcast_module(ctx: DistContext, module: nn.Module) -> None:
    if ctx.distributed:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def teacher_outputs_ddp(ctx: DistContext, ds, x_train, y_train, x_test, y_test, split, key: str,
                        model_spec, train: TrainSpec, seed: int, mc_passes: int,
                        cache_dir: Path, force: bool) -> TeacherOutputs:
    """`teacher.teacher_outputs` with rank-0 training and row-sharded inference."""
    path = Path(cache_dir) / "teacher" / f"{key}.pt"
    if not force:
        cached = load_cached(path, key)
        if cached is not None:
            return cached
    device = x_train.device
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    net = build_model(model_spec.name, tuple(x_train.shape[1:]), ds.num_classes,
                      **model_spec.options).to(device)
    a, v, u = (i.to(device) for i in (split.a, split.v, split.u))
    steps = train.steps(len(a))
    if ctx.is_main:
        steps = train_supervised(net, x_train[a], y_train[a], train, seed)
    _broadcast_module(ctx, net)
    probs_val = sharded_predict(ctx, net, x_train[v])
    probs_u, feats_u = sharded_predict(ctx, net, x_train[u], features=True)
    probs_test = sharded_predict(ctx, net, x_test)
    # Rank-specific dropout masks: the ranks' passes cover different rows anyway.
    torch.manual_seed(seed + 1 + 7919 * ctx.rank)
    mc_std = sharded_mc_std(ctx, net, x_train[u], mc_passes)
    out = TeacherOutputs(key=key, probs_val=probs_val.cpu(), probs_u=probs_u.cpu(),
                         probs_test=probs_test.cpu(), mc_std_u=mc_std.cpu(), features_u=feats_u.cpu(),
                         test_acc=accuracy(probs_test, y_test), val_acc=accuracy(probs_val, y_train[v]),
                         steps=steps, wall_s=round(time.perf_counter() - t0, 3))
    if ctx.is_main:
        buf = io.BytesIO()
        torch.save(out.to_state(), buf)
        atomic_write(path, buf.getvalue())
    ctx.barrier()
    return out


class StudentStep(nn.Module):
    """One training step's loss as a module, so DDP sees the student and any method module."""

    def __init__(self, student: nn.Module, extra: Optional[nn.Module],
                 unlabeled_loss: Callable[[Tensor, Tensor, Tensor], Tensor], labeled_weight: float):
        super().__init__()
        self.student, self.extra = student, extra
        self.unlabeled_loss, self.labeled_weight = unlabeled_loss, labeled_weight

    def forward(self, iu: Tensor, x_u: Tensor, x_a: Tensor, y_a: Tensor) -> Tensor:
        feats = self.student.forward_features(torch.cat([x_u, x_a]))
        logits = self.student.head(feats)
        nu = len(x_u)
        loss = self.unlabeled_loss(iu, logits[:nu], feats[:nu])
        return loss + self.labeled_weight * F.cross_entropy(logits[nu:], y_a)


def train_student_ddp(ctx: DistContext, step_module: StudentStep, x_a, y_a, x_u, spec: TrainSpec,
                      seed: int) -> int:
    """`train.train_student` with each global batch split across ranks; returns the steps."""
    for name, n in (("U", len(x_u)), ("A", len(x_a))):
        if min(spec.batch_size, n) < ctx.world_size:
            raise ValueError(f"the batch of {name} ({min(spec.batch_size, n)} rows) is smaller than "
                             f"the {ctx.world_size} ranks; use fewer processes or a larger batch")
    model = ctx.wrap(step_module)
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), spec)
    u_batches = _Batches(len(x_u), spec.batch_size, g, x_u.device)
    a_batches = _Batches(len(x_a), spec.batch_size, g, x_a.device)
    steps = spec.steps(len(x_u))
    model.train()
    for _ in range(steps):
        iu = u_batches.next()[ctx.rank::ctx.world_size]
        ia = a_batches.next()[ctx.rank::ctx.world_size]
        loss = model(iu, x_u[iu], x_a[ia], y_a[ia])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps


def _run_student_ddp(ctx, method, hp, ds, split, teacher, x_train, y_train, x_test, y_test,
                     input_shape, suite: Suite, sizes, train_seed: int):
    dev = ctx.device
    probs_u, feats_u = teacher.probs_u.to(dev), teacher.features_u.to(dev)
    torch.manual_seed(train_seed)
    student = build_model(suite.student_model.name, input_shape, ds.num_classes,
                          **suite.student_model.options).to(dev)
    fctx = M.FitContext(probs_val=teacher.probs_val.to(dev), y_val=y_train[split.v.to(dev)],
                        probs_u=probs_u, mc_std_u=teacher.mc_std_u.to(dev),
                        num_classes=ds.num_classes, teacher_feature_dim=feats_u.shape[1],
                        student_feature_dim=student.feature_dim, hp=hp)
    fitted = method.fit(fctx)
    params = dict(fitted.params)
    params.update(_alpha_truth(ds, split, teacher.probs_u, fitted))
    per_example = {k: v.to(dev) for k, v in fitted.per_example.items()}

    def unlabeled_loss(idx, logits, feats):
        batch = M.Batch(index=idx, logits=logits, features=feats, teacher_probs=probs_u[idx],
                        teacher_features=feats_u[idx],
                        extra={k: v[idx] for k, v in per_example.items()}, fitted=fitted, hp=hp)
        return method.loss(batch)

    a, u = split.a.to(dev), split.u.to(dev)
    step = StudentStep(student, fitted.module, unlabeled_loss, suite.labeled_weight)
    steps = train_student_ddp(ctx, step, x_train[a], y_train[a], x_train[u], sizes.student, train_seed)
    return accuracy(sharded_predict(ctx, student, x_test), y_test), steps, params


def run_suite_ddp(ctx: DistContext, suite: Suite, out: Path, *, smoke: bool = False,
                  data_root: Optional[Path] = None, force: bool = False,
                  log: Callable[[str], None] = lambda s: None, cpu_threads: Optional[int] = 1) -> Path:
    """`runner.run_suite` across the ranks of `ctx`; returns the runs CSV path (all ranks).

    cpu_threads: torch threads per rank while running (as runner.run_suite; None: unchanged).
    """
    previous = torch.get_num_threads()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    try:
        return _run_suite_ddp(ctx, suite, Path(out), smoke, data_root, force, log)
    finally:
        torch.set_num_threads(previous)


def _run_suite_ddp(ctx, suite, out, smoke, data_root, force, log) -> Path:
    sizes = suite.sizes(smoke)
    dev = ctx.device
    methods = [M.get_method(m) for m in suite.methods]
    hps = {m.name: m.hparams(suite.method_options.get(m.name)) for m in methods}
    for name in suite.method_options:
        M.get_method(name)
    ds = load_dataset(suite.dataset, data_root, **suite.dataset_options)
    dataset_id = {"name": ds.name, "options": dict(suite.dataset_options),
                  "digest": tensor_digest(ds.x_train, ds.y_train, ds.x_test, ds.y_test)}
    meta_json = json.dumps({**dict(suite.dataset_options),
                            **{k: v for k, v in ds.meta.items()
                               if isinstance(v, (int, float, str, bool))}}, sort_keys=True)
    csv_path = runs_path(out, suite.name)
    done = set() if force else done_keys(read_rows(csv_path))
    ctx.barrier()  # every rank has read the rows before rank 0 starts adding to them
    x_train, y_train = ds.x_train.to(dev), ds.y_train.to(dev)
    x_test, y_test = ds.x_test.to(dev), ds.y_test.to(dev)
    input_shape = tuple(ds.x_train.shape[1:])
    common_cfg = {"dataset": dataset_id, "n_val": sizes.n_val, "max_unlabeled": sizes.max_unlabeled,
                  "teacher_model": suite.teacher_model, "teacher_train": sizes.teacher,
                  "mc_passes": sizes.mc_passes, "student_model": suite.student_model,
                  "student_train": sizes.student, "labeled_weight": suite.labeled_weight,
                  "version": PIPELINE_VERSION}
    device_label = f"{dev} (ddp x{ctx.world_size})" if ctx.distributed else str(dev)
    for labeled, split_seed, train_seed in plan(suite, smoke):
        split = make_split(len(ds.y_train), labeled, sizes.n_val, split_seed, sizes.max_unlabeled)
        cfg_hash = {m.name: stable_hash({**common_cfg, "labeled_size": labeled, "method": m.name,
                                         "hp": hps[m.name]}) for m in methods}
        ids = {m.name: (ds.name, str(labeled), str(split_seed), str(train_seed), m.name)
               for m in methods}
        pending = [m for m in methods if (*ids[m.name], cfg_hash[m.name]) not in done]
        if not pending:
            continue
        if ctx.is_main:
            save_split(split, out / "runs" / "splits" / suite.name /
                       f"{ds.name}_labeled{labeled}_split{split_seed}.npz")
        tkey = teacher_key(dataset_id, split, labeled, sizes.n_val, sizes.max_unlabeled,
                           suite.teacher_model, sizes.teacher, train_seed, sizes.mc_passes)
        teacher = teacher_outputs_ddp(ctx, ds, x_train, y_train, x_test, y_test, split, tkey,
                                      suite.teacher_model, sizes.teacher, train_seed,
                                      sizes.mc_passes, out / "cache", force)
        base = {
            "suite": suite.name, "dataset": ds.name, "dataset_meta": meta_json,
            "labeled_size": labeled,
            "n_unlabeled": len(split.u), "n_val": len(split.v), "n_test": len(ds.y_test),
            "split_seed": split_seed, "train_seed": train_seed,
            "teacher_arch": suite.teacher_model.describe(),
            "student_arch": suite.student_model.describe(),
            "teacher_test_acc": round(teacher.test_acc, 6),
            "teacher_val_acc": round(teacher.val_acc, 6), "teacher_key": tkey,
            "teacher_steps": teacher.steps, "teacher_train": _describe(sizes.teacher),
            "labeled_weight": suite.labeled_weight, "weight_decay": sizes.student.weight_decay,
            "selection": "last", "device": device_label, "git_sha": git_sha(),
            "mc_passes": sizes.mc_passes,
        }
        for m in pending:
            t0 = time.perf_counter()
            row = {**base, "method": m.name, "config_hash": cfg_hash[m.name]}
            row.update({k: _loggable(v) for k, v in hps[m.name].items()})
            if m.trains_student:
                acc, steps, params = _run_student_ddp(ctx, m, hps[m.name], ds, split, teacher,
                                                      x_train, y_train, x_test, y_test,
                                                      input_shape, suite, sizes, train_seed)
                row.update(params)
                row.update(epochs=sizes.student.epochs, steps=steps,
                           batch_size=sizes.student.batch_size, lr=sizes.student.lr,
                           optimizer=sizes.student.optimizer, test_acc=round(acc, 6),
                           wall_s=round(time.perf_counter() - t0, 3))
            else:
                row.update(epochs=sizes.teacher.epochs, steps=teacher.steps,
                           batch_size=sizes.teacher.batch_size, lr=sizes.teacher.lr,
                           optimizer=sizes.teacher.optimizer,
                           test_acc=round(teacher.test_acc, 6), wall_s=teacher.wall_s)
            if ctx.is_main:
                record_row(csv_path, row)
                log(f"{suite.name} {ds.name} labeled={labeled} split={split_seed} "
                    f"{m.name}: test_acc={row['test_acc']:.4f}")
    ctx.barrier()
    return csv_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=G -m slam_bench.pipeline.ddp",
        description="run a benchmark suite with DDP students (arguments as `slam-bench run`)")
    cli_run.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu", "cuda"):
        print("slam_bench.pipeline.ddp: error: --device must be auto, cpu or cuda (each rank "
              "uses cuda:LOCAL_RANK)", file=sys.stderr)
        return 2
    device = None if args.device == "auto" else args.device
    ctx = DistContext.from_env(device=device, timeout_s=TIMEOUT_S)
    try:
        suite = get_suite(args.suite)
        changes = {}
        if args.trials is not None:
            changes["trials"] = args.trials
        if args.labeled:
            changes["labeled_sizes"] = tuple(args.labeled)
        if changes:
            suite = suite.with_sizes(args.smoke, **changes)
        csv_path = run_suite_ddp(ctx, suite, args.out, smoke=args.smoke, data_root=args.data_root,
                                 force=args.force, log=print)
        if ctx.is_main:
            regenerate(args.out, [suite.name], readme=default_readme(args.out))
            print(markdown_table(suite.name, read_rows(csv_path)))
            print(f"rows: {csv_path}")
        return 0
    except (ValueError, DatasetUnavailable, CacheError, ResultsError) as e:
        # Every rank meets the same configuration error; one message is enough.
        if ctx.is_main:
            print(f"slam_bench.pipeline.ddp: error: {e}", file=sys.stderr)
        return 2
    finally:
        ctx.cleanup()


if __name__ == "__main__":
    sys.exit(main())
