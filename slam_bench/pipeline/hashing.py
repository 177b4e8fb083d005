"""Stable content hashes for cache keys and config hashes.

A hash covers a JSON rendering with sorted keys, so it is the same across processes and
Python versions (unlike `hash()`), and tensors are hashed by their bytes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

# Bump when a change to the pipeline changes results for an unchanged config, so that
# cached teachers and recorded rows computed by the old code are not reused.
PIPELINE_VERSION = 1


def _default(obj: Any):
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(obj)
    return str(obj)


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hex digest of a JSON-able object (dicts, lists, numbers, strings, dataclasses)."""
    text = json.dumps(obj, sort_keys=True, default=_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensor_digest(*tensors: torch.Tensor, length: int = 16) -> str:
    """Digest of tensors' shapes, dtypes and bytes (e.g. to key a cache to a loader's order)."""
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(f"{tuple(a.shape)}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a.numpy()).tobytes())
    return h.hexdigest()[:length]
