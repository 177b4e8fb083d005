"""Launch-shape heuristic for the SLaM kernels: block width, rows per program, warps.

No autotuning: Triton's autotuner needs a GPU to time configs, and the interpreter used in CI
would run every candidate. The heuristic follows spec/kernels.md's design rules instead, and
every threshold is a named module constant so a GPU sweep can revisit it.
"""
from __future__ import annotations

from typing import NamedTuple

import triton

# A row whose padded width fits in this many elements is loaded once and kept on chip, so the
# forward reads it once; wider rows are streamed. The SLaM math keeps about 6 fp32 tiles live;
# at 8k elements over 32 warps that is ~48 registers a thread, under the 64 a thread can have
# when 1024 threads share an SM's 64k registers (spec/kernels.md's ceiling is 32k elements).
MAX_SINGLE_BLOCK = 8192
# Block width when streaming a wide row (at most 32k per spec/kernels.md rule 1): 8 elements a
# thread over 16 warps, one 16-byte load per thread for bf16. The forward's second pass over
# the row mostly hits L2 (132 SMs x one row of at most 512 KiB each fits in H100/H200 L2).
STREAM_BLOCK = 4096
# For narrow rows, one program takes several rows so that it still moves about this many
# elements (amortises launch/index overhead on a GPU and keeps the interpreter's grid small).
TILE_ELEMENTS = 4096
# Upper bound on rows per program: more rows per program leaves SMs idle at moderate N.
MAX_ROWS = 64


class BlockConfig(NamedTuple):
    """block: columns per tile (power of two); rows: rows per program (power of two);
    single: the whole row fits in one block (no streaming loop); num_warps: launch warps."""

    block: int
    rows: int
    single: bool
    num_warps: int


def block_config(n_cols: int) -> BlockConfig:
    """The launch shape used for rows of `n_cols` classes (any C >= 1)."""
    if isinstance(n_cols, bool) or not isinstance(n_cols, int) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive int, got {n_cols!r}")
    width = triton.next_power_of_2(n_cols)
    single = width <= MAX_SINGLE_BLOCK
    block = width if single else STREAM_BLOCK
    # With the default constants a streamed row gets a program of its own (rows = 1).
    rows = max(1, min(MAX_ROWS, TILE_ELEMENTS // block))
    # One warp per 256 tile elements (8 fp32 registers per thread per live tile), 4..32.
    num_warps = max(4, min(32, rows * block // 256))
    return BlockConfig(block=block, rows=rows, single=single, num_warps=num_warps)
