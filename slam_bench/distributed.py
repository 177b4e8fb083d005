"""Multi-process (DDP) helpers for the paper-scale suites, launched with torchrun.

    torchrun --nproc_per_node=G -m slam_bench ...  # sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*

`DistContext.from_env()` joins the process group (nccl for CUDA, gloo for CPU) or, when
WORLD_SIZE is unset or 1, returns a single-process context whose methods are no-ops, so the
same training code runs either way (`DistContext.single(device)` builds that context directly,
without reading the environment). Roles:
- the student is wrapped in DistributedDataParallel (`wrap`), each rank trains on its slice of
  every epoch's permutation (`epoch_indices`), gradients are averaged by DDP;
- the teacher is NOT wrapped: each rank runs inference on a contiguous shard of the rows
  (`shard`), and `gather_rows` reassembles the full output in the original row order on
  every rank;
- only rank 0 writes results (`is_main`).
Always call the wrapped model itself (not `.module`) in training: DDP's gradient hooks are
armed by the wrapper's forward.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


@dataclass
class DistContext:
    """One process's place in the job. `device` is where this rank's tensors go."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None  # None: single process, no process group

    @classmethod
    def single(cls, device="cpu") -> "DistContext":
        """The one-process context on `device` (str or torch.device): rank 0 of 1, every
        collective an identity, so code written for DDP runs unchanged without a process group."""
        return cls(0, 1, 0, torch.device(device), None)

    @classmethod
    def from_env(cls, backend: Optional[str] = None, device: Optional[str] = None,
                 timeout_s: float = 1800.0) -> "DistContext":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group.

        backend: "nccl" or "gloo"; default nccl when this rank uses CUDA, else gloo.
        device: "cuda" or "cpu" (default: CUDA when available); ranks use cuda:LOCAL_RANK.
        timeout_s: how long collectives wait for a slow rank before failing.
        """
        world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} are inconsistent")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
        if device == "cuda":
            if local >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices")
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        if world == 1:
            return cls(0, 1, 0, dev, None)
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        if backend not in ("nccl", "gloo"):
            raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
        if backend == "nccl" and dev.type != "cuda":
            raise ValueError("backend='nccl' needs CUDA devices; use 'gloo' on CPU")
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world, local, dev, backend)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the one rank that logs and writes result files."""
        return self.rank == 0

    def wrap(self, model: nn.Module, **ddp_options) -> nn.Module:
        """Move `model` to this rank's device; in a multi-process job wrap it in DDP.

        DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts
        from the same weights whatever its seed.
        """
        model = model.to(self.device)
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, **ddp_options)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The plain module inside a DDP wrapper (for saving or evaluation)."""
        return model.module if isinstance(model, DistributedDataParallel) else model

    def shard(self, n: int) -> slice:
        """This rank's contiguous block of rows 0..n-1 (sizes differ by at most one)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def gather_rows(self, local: Tensor, n: int) -> Tensor:
        """Concatenate every rank's `shard(n)` rows: (n_rank, ...) -> (n, ...) on every rank.

        `local` must be on this rank's device (nccl only moves CUDA tensors).
        """
        mine = self.shard(n)
        if local.shape[0] != mine.stop - mine.start:
            raise ValueError(f"local must hold this rank's {mine.stop - mine.start} rows of shard({n}), "
                             f"got {local.shape[0]}")
        if not self.distributed:
            return local
        longest = -(-n // self.world_size)
        # all_gather needs equal shapes: pad every shard to the longest, then cut.
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        sizes = [n // self.world_size + (r < n % self.world_size) for r in range(self.world_size)]
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def epoch_indices(self, n: int, epoch: int, seed: int, shuffle: bool = True) -> Tensor:
        """This rank's int64 row indices for one epoch over n rows.

        Every rank draws the same permutation from (seed, epoch) and takes every
        world_size-th entry; the tail is padded by wrapping around so all ranks run the same
        number of steps (a rank with one step fewer would leave the others waiting forever).
        """
        if not self.distributed:
            if not shuffle:
                return torch.arange(n)
            g = torch.Generator().manual_seed(seed + epoch)
            return torch.randperm(n, generator=g)
        sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank,
                                     shuffle=shuffle, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    def all_reduce_mean(self, value: Tensor) -> Tensor:
        """Mean of `value` over ranks (a copy; e.g. for logging the epoch loss)."""
        out = value.detach().clone()
        if self.distributed:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            out /= self.world_size
        return out

    def broadcast_module(self, module: nn.Module) -> None:
        """Overwrite every rank's parameters and buffers with rank 0's, in place (for a model
        that rank 0 alone trained; DDP-wrapped models get this from `wrap` instead)."""
        if not self.distributed:
            return
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (e.g. a run id or a timestamp used in file names)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def cleanup(self) -> None:
        """Leave the process group (call once at the end, on every rank).

        Free every DDP-wrapped model first: if a DDP Reducer outlives this call it becomes the
        group's last owner, and destroying a gloo group from its destructor holds the GIL and
        can deadlock against gloo's worker threads (pytorch/pytorch#56297).
        """
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> "DistContext":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
