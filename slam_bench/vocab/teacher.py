"""A teacher's outputs kept as its top-K entries per row: `TopKProbs`.

This is what a top-K teacher cache stores (docs/vocab.md): for each row the K largest
probabilities, largest first, and their class ids. The mass outside the K ids is dropped, not
renormalised, exactly as `slam_loss_topk` documents: scattering a row back into zeros
(`dense()`) gives the teacher row the loss sees. With K = C nothing is dropped and `dense()`
returns the original rows.

What the estimators read from a teacher row needs only the kept entries: its argmax
(`top1`, the first id), its margin p_(1) - p_(2) (`margin`; the second entry is taken as 0
when K = 1, the value the dropped mass is given everywhere) and the rank of a true label
(`label_rank`: the kept entries strictly above the label's probability, which is 0 for a label
outside the K ids). Where the top-K holds all of a row's mass, each of these equals the dense
row's value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from slam_bench.vocab.checks import check_teacher

# The id dtype of a cache: int32 holds any vocabulary below 2**31 ids at half int64's bytes.
ID_DTYPE = torch.int32


@dataclass(frozen=True)
class TopKProbs:
    """ids (N, K) int32 and probs (N, K) float (the teacher's dtype), each row's K largest
    probabilities in descending order; num_classes C >= K."""
    ids: Tensor
    probs: Tensor
    num_classes: int

    @classmethod
    def from_dense(cls, probs: Tensor, k: int) -> "TopKProbs":
        """The top-k of dense (N, C) probabilities (k is capped at C), largest first; ties
        broken as torch.topk breaks them."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        c = probs.shape[1]
        top = torch.topk(probs, min(k, c), dim=1, largest=True, sorted=True)
        return cls(top.indices.to(ID_DTYPE), top.values, c)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored ids and probabilities."""
        return self.ids.numel() * self.ids.element_size() + \
            self.probs.numel() * self.probs.element_size()

    def rows(self, index) -> "TopKProbs":
        """The rows at `index` (a slice, or an index tensor on the tensors' device)."""
        return TopKProbs(self.ids[index], self.probs[index], self.num_classes)

    def first(self, k: int) -> "TopKProbs":
        """The top-k of these rows (k <= K): the first k columns, as the rows are sorted."""
        if not 1 <= k <= self.k:
            raise ValueError(f"k must lie in [1, K={self.k}], got {k}")
        return TopKProbs(self.ids[:, :k], self.probs[:, :k], self.num_classes)

    def to(self, device=None, dtype=None) -> "TopKProbs":
        """The same rows on `device`, probabilities in `dtype` (ids keep theirs)."""
        return TopKProbs(self.ids.to(device), self.probs.to(device=device, dtype=dtype),
                         self.num_classes)

    def dense(self, dtype=None) -> Tensor:
        """(N, C) rows with the kept probabilities at their ids and 0 elsewhere. For small C
        only (tests, and the dense estimators' oracle): this is the N x C row the cache avoids."""
        out = torch.zeros(len(self), self.num_classes, dtype=dtype or self.probs.dtype,
                          device=self.probs.device)
        return out.scatter_(1, self.ids.long(), self.probs.to(out.dtype))

    def hard(self) -> "TopKProbs":
        """The one-hot argmax of each row (K = 1, probability 1): the hard-label targets."""
        return TopKProbs(self.ids[:, :1], torch.ones_like(self.probs[:, :1]), self.num_classes)

    def top1(self) -> Tensor:
        """(N,) int64: each row's argmax."""
        return self.ids[:, 0].long()

    def margin(self) -> Tensor:
        """(N,) in the probabilities' dtype: p_(1) - p_(2), with p_(2) = 0 when K = 1."""
        second = self.probs[:, 1] if self.k > 1 else torch.zeros_like(self.probs[:, 0])
        return self.probs[:, 0] - second

    def label_rank(self, labels: Tensor) -> Tensor:
        """(N,) int64: how many classes have a strictly larger probability than the label's,
        counting the kept entries only (the label's is 0 outside the K ids)."""
        hit = self.ids.long() == labels[:, None]
        p_label = torch.where(hit, self.probs, torch.zeros_like(self.probs)).sum(dim=1)
        return (self.probs > p_label[:, None]).sum(dim=1)

    def check(self, name: str) -> None:
        """ValueError/TypeError naming `name` unless: ids (N, K) int32 in [0, C) and distinct
        per row, probs (N, K) finite, non-negative, sorted descending, rows summing to at most
        1 (the mass outside is dropped, never added)."""
        if self.ids.dtype != ID_DTYPE:
            raise TypeError(f"{name}.ids must be {ID_DTYPE}, got {self.ids.dtype}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise TypeError(f"{name}.num_classes must be an int, got {self.num_classes!r}")
        if self.ids.numel() and bool((self.ids < 0).any()):
            raise ValueError(f"{name}.ids must lie in [0, C={self.num_classes})")
        try:  # no id is negative, so ignore_index=-1 ignores no row
            check_teacher(self.ids, self.probs, self.ids.shape[0], self.num_classes, -1,
                          self.ids.device, True)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}: {e}") from None
        if self.k > 1 and len(self) and bool((self.probs[:, 1:] > self.probs[:, :-1]).any()):
            raise ValueError(f"{name}.probs must be sorted in descending order in every row")


Probs = Union[Tensor, TopKProbs]


def teacher_argmax(probs: Probs) -> Tensor:
    """(N,) int64 argmax of dense (N, C) probabilities or of a `TopKProbs`."""
    return probs.top1() if isinstance(probs, TopKProbs) else probs.argmax(dim=1)


def num_classes_of(probs: Probs) -> int:
    """C of dense (N, C) probabilities or of a `TopKProbs`."""
    return probs.num_classes if isinstance(probs, TopKProbs) else probs.shape[1]

