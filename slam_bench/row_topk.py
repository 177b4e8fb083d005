"""The kk largest entries of each row, exactly, at a fraction of `torch.topk`'s cost on wide rows.

`torch.topk(y, kk)` over an (n, C) tensor compares every entry inside its selection loop; on
CPU at C = 1000 that is most of the cost of a loss pass. Here the columns are split into G
groups of B (group j holds columns j, j + G, ..., j + (B - 1) G, so one `amax` over a
(n, B, G) view finds every group's maximum with vectorised loads), the kk groups with the
largest maxima are kept, and `torch.topk` runs only over their kk B entries (plus the
C - G B tail columns, kept always).

Why it is exact, ties included. Let T be the kk-th largest value of a row and a the number of
entries above T (a < kk). An entry above T lies in a group whose maximum is above T; there
are at most a <= kk - 1 such groups, and any group with a maximum below or equal to T ranks
after them, so all of them are kept: every entry above T is gathered. Entries equal to T: if
every group whose maximum equals T is kept, all of them are gathered; otherwise the kept
groups include kk - p groups whose maximum is T (p <= a: those above T), each contributing at
least one entry equal to T. Either way the gathered entries hold at least kk entries >= T,
all a entries above T among them, so their kk largest values, sorted, are the row's. (The
always-kept tail only adds candidates.) The indices returned point at entries holding those
values; among entries of equal value they may differ from `torch.topk`'s choice, which no
caller depends on (the loss only uses indices where the top k is unique, see
slam_bench.torch_backend).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

# Below this many columns `torch.topk` over the whole row is as cheap as the grouped pass.
MIN_GROUPED_COLUMNS = 256


def group_size(c: int, kk: int) -> int:
    """Entries per group B for rows of c columns: about sqrt(c / kk), which balances the
    top-kk over the G = c / B group maxima against the top-kk over the kk B gathered entries;
    1 (no grouping) when that does not leave more than 2 kk groups."""
    if c < MIN_GROUPED_COLUMNS:
        return 1
    b = max(2, round(math.sqrt(c / kk)))
    return b if c // b > 2 * kk else 1


def largest(y: Tensor, kk: int) -> Tuple[Tensor, Tensor]:
    """(values, indices), each (n, kk): the kk largest entries of every row of y (n, C),
    values sorted descending, exactly `torch.topk(y, kk).values`. 1 <= kk <= C."""
    n, c = y.shape
    b = group_size(c, kk) if y.stride(1) == 1 else 1
    if b == 1:
        return torch.topk(y, kk, dim=1)
    g = c // b
    gmax = y[:, :g * b].view(n, b, g).amax(dim=1)  # (n, g): group j = columns j + i g
    best = torch.topk(gmax, kk, dim=1, sorted=False).indices
    cols = (best.unsqueeze(2) + torch.arange(0, g * b, g, device=y.device)).view(n, kk * b)
    if g * b < c:
        tail = torch.arange(g * b, c, device=y.device).expand(n, c - g * b)
        cols = torch.cat([cols, tail], dim=1)
    top = torch.topk(y.gather(1, cols), kk, dim=1)
    return top.values, cols.gather(1, top.indices)
