"""`slam-bench run` on several GPUs: the torchrun entry point for DDP student training.

    torchrun --nproc_per_node=G -m slam_bench.cli.ddp SUITE --data-root DIR [run options]

Takes the same arguments as `slam-bench run` and writes the same files with the same columns
(the `device` column says e.g. "cuda:0 (ddp x8)"). It joins the process group and hands the
rank's `DistContext` to `runner.run_suite`, the one trial loop: see its module docstring for
what ranks do differently (teacher trained on rank 0 and broadcast, inference sharded, student
in DDP on a rank-strided share of every global batch, only rank 0 writing). With one process
it behaves exactly like `slam-bench run`.
"""
from __future__ import annotations

import argparse
import os
import sys

from slam_bench.cli import run as cli_run
from slam_bench.cli.common import fail, user_errors
from slam_bench.distributed import DistContext

PROG = "slam_bench.cli.ddp"
# Collectives wait this long for a slow rank (rank 0 trains the teacher while the others wait).
TIMEOUT_S = 4 * 3600


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"torchrun --nproc_per_node=G -m {PROG}",
        description="run a benchmark suite with DDP students (arguments as `slam-bench run`)")
    cli_run.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu", "cuda"):
        return fail(PROG, "--device must be auto, cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    try:
        ctx = DistContext.from_env(device=None if args.device == "auto" else args.device,
                                   timeout_s=TIMEOUT_S)
    except user_errors() as e:
        return fail(PROG, e)
    try:
        # Every rank meets the same configuration error; rank 0 alone says it.
        code = cli_run.main(args, ctx=ctx, prog=PROG)
        # Every rank finishes its last collective before any rank tears its gloo/NCCL
        # connections down: a rank that left early was seen to abort its peer at exit
        # ("terminate called without an active exception") on a loaded machine. Only on the
        # way out of a finished run: after an error or Ctrl-C the ranks may be in different
        # places.
        if code == 0:
            ctx.barrier()
        return code
    finally:
        ctx.cleanup()


def exit_process(code: int) -> None:
    """End this rank's process with `code`, skipping the interpreter's teardown.

    Once a rank has used DDP, its gloo backend outlives `destroy_process_group`: something
    DDP leaves behind holds it where no Python collection reaches (with torch 2.13, after
    `del model; gc.collect(); destroy_process_group()` the backend's worker threads
    `pt_gloo_runloop` and its transport loop `gloo_tcp_loop` still run; with collectives but no
    DDP they are gone). They then run into the interpreter's shutdown, where the backend is
    destroyed in no defined order with the rest of the runtime: on loaded machines a rank was
    seen to die there with "terminate called without an active exception" (SIGABRT) after a
    run that had finished and written everything. By the time `main` returns, every
    rank has passed its last collective, left the group, and rank 0 has written every file
    atomically (fsynced, closed), so nothing is left to do but flush the streams; `os._exit`
    then ends the process without running those destructors.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_process(main())
