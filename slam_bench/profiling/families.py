"""Kernel families: what a family of fused losses plugs into the sweep and the GPU check.

A *family* owns some values of the CSV's "kernel" column (e.g. the SLaM loss family owns
"slam", "distill" and "distill_onehot") and says, for each of them:
- how to draw a benchmark problem (`make_problem`),
- which providers compute it and how (`loss_fn`: provider, problem -> loss callable),
- how many bytes each provider moves (its own inputs read and outputs written:
  `provider_bytes`) and the problem's floor (`floor_bytes`),
- for compute-bound work, the multiply-adds of one step (`flops`, x2 for FLOPs),
- its CPU sweeps (`cpu_grids`, by sweep name), which configurations its GPU goals need
  (`goal_configs`, run first by the GPU check) and the rest of its GPU sweep (`gpu_configs`),
- a smoke call through its Triton kernels (`smoke`: the GPU check stops when one fails), its
  correctness rows against a float64 reference (`correctness`), and its targets and goals
  computed from the sweep's rows (`cpu_targets`, `gpu_goals`).
`register_family` adds one; the sweep looks a problem's family up by its kernel name.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
MODES = ("fwd", "full")


class Unavailable(Exception):
    """The provider cannot run this problem here; the message says why."""


class Config(NamedTuple):
    """One sweep configuration: a problem and the modes and providers measured on it.
    `params`: (name, value) pairs passed to the family's make_problem as keywords (e.g. the
    hidden size of a fused linear problem)."""
    kernel: str
    teacher: str
    dtype: str
    n: int
    c: int
    modes: Tuple[str, ...] = MODES
    providers: Optional[Tuple[str, ...]] = None  # None: every provider of the family
    params: Tuple[Tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Grid:
    """Configurations as a grid: kernels x teachers x dtypes x sizes, the sizes being a C
    sweep at n_fixed and an N sweep at c_for_n_sweep (dtype-major: the first dtype's rows
    come first)."""
    kernels: Tuple[str, ...]
    dtypes: Tuple[str, ...]
    teachers: Tuple[str, ...]
    c_values: Tuple[int, ...]
    n_fixed: int
    n_values: Tuple[int, ...] = ()
    c_for_n_sweep: Optional[int] = None
    modes: Tuple[str, ...] = MODES
    providers: Optional[Tuple[str, ...]] = None
    params: Tuple[Tuple[str, Any], ...] = ()

    def configs(self) -> List[Config]:
        sizes = [(self.n_fixed, c) for c in self.c_values]
        sizes += [(n, self.c_for_n_sweep) for n in self.n_values
                  if (n, self.c_for_n_sweep) not in sizes]
        return [Config(kernel, teacher, dtype, n, c, self.modes, self.providers, self.params)
                for dtype in self.dtypes for kernel in self.kernels
                for teacher in self.teachers for n, c in sizes]


@dataclass
class Problem:
    """Inputs of one benchmark configuration. `data` holds them by name (tensors and
    scalars); `grad_input` names the tensor (or tensors) whose gradient a "full" step
    computes; `params` are the problem's hyper-parameters as recorded in the CSV
    ("name=value" words, read back by `parse_params`)."""
    kernel: str
    n: int
    c: int
    dtype: str
    teacher: str
    data: Dict[str, Any]
    grad_input: Union[str, Tuple[str, ...]] = "z"
    params: str = ""
    backend: str = "auto"  # what this library's providers ask for ("triton" on a GPU check)

    def leaves(self) -> Iterator[Tensor]:
        """The tensors a "full" step differentiates."""
        names = (self.grad_input,) if isinstance(self.grad_input, str) else self.grad_input
        return (self.data[name] for name in names)

    def own_copy(self) -> "Problem":
        """The same problem on tensors of its own: a provider that writes into its inputs
        (Liger writes the gradient into the logits) cannot change what the others read."""
        data = {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in self.data.items()}
        return Problem(self.kernel, self.n, self.c, self.dtype, self.teacher, data,
                       self.grad_input, self.params, self.backend)


LossFn = Callable[[Problem], Tensor]
Log = Callable[[str], None]


@dataclass(frozen=True)
class KernelFamily:
    name: str
    kernels: Tuple[str, ...]
    providers: Tuple[str, ...]  # sweep order; this library's own providers first
    make_problem: Callable[..., Problem]  # (kernel, n, c, dtype, device, teacher, seed, backend)
    loss_fn: Callable[[str, Problem], LossFn]  # raises Unavailable
    provider_bytes: Callable[[str, Problem, str], int]  # (provider, problem, mode)
    floor_bytes: Callable[[Problem, str], int]  # (problem, mode)
    # Multiply-adds x 2 of one step (problem, mode); 0: memory-bound, no FLOP rate recorded.
    flops: Callable[[Problem, str], int] = lambda problem, mode: 0
    # CPU sweeps by name ("cpu-quick", "cpu-full", and "dry-run": the GPU check on CPU).
    cpu_grids: Dict[str, Tuple[Grid, ...]] = field(default_factory=dict)
    goal_configs: Callable[[], List[Config]] = lambda: []
    gpu_configs: Callable[[], List[Config]] = lambda: []
    # One tiny backend="triton" forward + backward; raises whatever stops the kernels.
    smoke: Callable[[torch.device], None] = lambda device: None
    correctness: Callable[[torch.device, bool, Log], List[dict]] = lambda d, dry, log: []
    gpu_goals: Callable[[Any], List[dict]] = lambda df: []
    cpu_targets: Callable[[Any], List[dict]] = lambda df: []


def require_liger(device: torch.device) -> None:
    """Raise Unavailable unless Liger-Kernel can run a provider here: a CUDA device and the
    package installed (the peer providers of every family)."""
    if device.type != "cuda":
        raise Unavailable("Liger-Kernel needs a CUDA GPU")
    if importlib.util.find_spec("liger_kernel") is None:
        raise Unavailable("liger-kernel is not installed")


FAMILIES: Dict[str, KernelFamily] = {}


def register_family(family: KernelFamily) -> KernelFamily:
    """Add a family; its kernel names must not clash with another family's."""
    for other in FAMILIES.values():
        clash = set(other.kernels) & set(family.kernels)
        if clash and other.name != family.name:
            raise ValueError(f"kernel names {sorted(clash)} already belong to family {other.name!r}")
    FAMILIES[family.name] = family
    return family


def family_of(kernel: str) -> KernelFamily:
    for fam in FAMILIES.values():
        if kernel in fam.kernels:
            return fam
    known = sorted(k for f in FAMILIES.values() for k in f.kernels)
    raise ValueError(f"kernel must be one of {known}, got {kernel!r}")


def parse_params(text) -> Dict[str, str]:
    """A CSV row's params ("k=5 alpha=0.6-1.0") as {name: value}; {} for an empty cell."""
    if not isinstance(text, str):
        return {}
    return dict(word.split("=", 1) for word in text.split() if "=" in word)
