"""Launch shape of the SLaM kernels: block width, rows per program, warps, load alignment and
the streamed rows' top-k slots.

No autotuning: Triton's autotuner needs a GPU to time configs, and the interpreter used in CI
would run every candidate. The heuristic follows docs/kernels.md's design rules instead, and
every threshold is a named module constant so a GPU sweep can revisit it. Register counts for
sm_90 (H100/H200) are checked ahead of time by `python -m slam_bench.kernels.codegen`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple, Sequence

import triton

# A row whose padded width fits in this many elements is loaded once and kept on chip, so the
# loss reads it once and writes the gradient once (the 6 B floor); wider rows are streamed.
# The on-chip path keeps about six fp32 tiles live (z, y, exp, r, q and the gradient): at 8k
# elements over 16 warps that is 16 registers a tile per thread, ~100 registers in all, which
# 512 threads hold in an SM's 64k (docs/kernels.md's ceiling is 32k elements).
MAX_SINGLE_BLOCK = 8192
# Block width when streaming a wide row (at most 32k per docs/kernels.md rule 1): 8 elements a
# thread over 16 warps, one 16-byte load per thread for bf16.
STREAM_BLOCK = 4096
# For narrow rows, one program takes several rows so that it still moves about this many
# elements (amortises launch/index overhead on a GPU and keeps the interpreter's grid small).
TILE_ELEMENTS = 2048
# Upper bound on rows per program: more rows per program leaves SMs idle at moderate N.
MAX_ROWS = 64
# Tile elements per warp: 8 fp32 registers per thread per live tile. At 8k elements this gives
# 32 warps, whose 1024 threads would have 64 registers each, too few for the six live tiles:
# MAX_WARPS caps it at 16.
ELEMENTS_PER_WARP = 256
MAX_WARPS = 16
# Streamed rows keep their largest teacher entries (and logits) in this many on-chip slots:
# 2k for a scalar k (room for ties at the threshold), between the two bounds; a per-row k
# tensor (whose max the host cannot read without a sync) gets STREAM_TOPK_ROW. A row whose
# top-(k + ties) set does not fit reads z and y once more for its mixed terms, and with
# k > KCAP finds its threshold by threshold.kth_largest_radix first (2-4 passes over y).
STREAM_TOPK_MIN = 8
STREAM_TOPK_MAX = 64
STREAM_TOPK_ROW = 16
# Widest vector load, bytes (LDG.128).
VECTOR_BYTES = 16
# Split streamed rows (kernels/split_rows.py) when there are fewer rows than this many per SM:
# one program per row would leave most SMs idle. Each row is then cut into ranges of whole
# STREAM_BLOCK tiles so that about SPLIT_ROWS_PER_SM x SMs programs run, at most MAX_SPLITS per
# row (the combine step merges MAX_SPLITS x KCAP top-k slots in one program: 32 x 64 = 2048).
SPLIT_ROWS_PER_SM = 2
MAX_SPLITS = 32
# The SM count used to decide, where the device cannot say: None means "do not split" (CPU:
# the interpreter has no SMs to fill; tests set a count to run the split path at tiny sizes).
SM_COUNT_OVERRIDE = None


class BlockConfig(NamedTuple):
    """block: columns per tile (power of two); rows: rows per program (power of two);
    single: the whole row fits in one block (no streaming loop); num_warps: launch warps."""

    block: int
    rows: int
    single: bool
    num_warps: int


class Layout(NamedTuple):
    """align: the largest power of two <= 16 dividing C and every row stride (the kernel sees
    sizes divided by it); peel: streamed rows start with a head of < vec elements so that the
    body is 16-byte aligned (strides all equal, not a multiple of vec); vec: elements per
    16-byte load of z; kcap: top-k slots of a streamed row (1 when unused)."""

    align: int
    peel: bool
    vec: int
    kcap: int


def block_config(n_cols: int) -> BlockConfig:
    """The launch shape used for rows of `n_cols` classes (any C >= 1)."""
    if isinstance(n_cols, bool) or not isinstance(n_cols, int) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive int, got {n_cols!r}")
    width = triton.next_power_of_2(n_cols)
    single = width <= MAX_SINGLE_BLOCK
    block = width if single else STREAM_BLOCK
    # With the default constants a streamed row gets a program of its own (rows = 1).
    rows = 1 if not single else max(1, min(MAX_ROWS, TILE_ELEMENTS // block))
    num_warps = max(4, min(MAX_WARPS, rows * block // ELEMENTS_PER_WARP))
    return BlockConfig(block=block, rows=rows, single=single, num_warps=num_warps)


def launch_layout(n_cols: int, strides: Sequence[int], elem_size: int, single: bool,
                  k_hint: int) -> Layout:
    """Alignment and top-k slots for one launch. strides: the row strides (elements) of every
    (N, C) operand; elem_size: bytes per logit; k_hint: the scalar k, or 0 for per-row k."""
    vec = max(1, VECTOR_BYTES // elem_size)
    align = 16
    for v in [n_cols, *strides]:
        while v % align:
            align //= 2
    peel = (not single) and align < vec and len(set(strides)) == 1
    if single:
        kcap = 1
    elif k_hint > 0:
        kcap = min(STREAM_TOPK_MAX, max(STREAM_TOPK_MIN, triton.next_power_of_2(2 * k_hint)))
    else:
        kcap = STREAM_TOPK_ROW
    return Layout(align=align, peel=peel, vec=vec, kcap=kcap)


@contextlib.contextmanager
def no_split() -> Iterator[None]:
    """Within the block no streamed row is split (one program per row, as before split rows
    existed), e.g. to time the split against the unsplit launch; the setting is restored on
    exit, also after an error. Process-wide, like every constant here: not for threads that
    launch kernels concurrently."""
    global SPLIT_ROWS_PER_SM
    saved, SPLIT_ROWS_PER_SM = SPLIT_ROWS_PER_SM, 0
    try:
        yield
    finally:
        SPLIT_ROWS_PER_SM = saved


def split_parts(n_rows: int, n_cols: int, block: int, sm_count) -> tuple:
    """(parts, span_blocks) for streamed rows: each of the n_rows rows cut into `parts` ranges of
    `span_blocks` tiles of `block` columns, or (1, 0) for no split (sm_count None, enough rows
    to fill the SMs, or a row of one tile). The ranges cover the row: parts = ceil(C / span)."""
    if sm_count is None or n_rows <= 0 or n_rows >= SPLIT_ROWS_PER_SM * sm_count:
        return 1, 0
    tiles = -(-n_cols // block)
    want = min(MAX_SPLITS, tiles, -(-SPLIT_ROWS_PER_SM * sm_count // n_rows))
    if want < 2:
        return 1, 0
    span = -(-tiles // want)
    return -(-tiles // span), span
