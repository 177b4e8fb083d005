"""IMDB Large Movie Review sentiment (Maas et al., 2011) as padded token-id sequences.

Layout under the data root (the official aclImdb_v1 archive):
    aclImdb/train/{pos,neg}/<id>_<rating>.txt, aclImdb/train/unsup/*.txt (optional, unlabeled)
    aclImdb/test/{pos,neg}/<id>_<rating>.txt
Labels: neg = 0, pos = 1. Order: neg then pos, each by numeric review id. Hidden entries
(`.DS_Store`, `._*`) are skipped; anything else in a review folder that is not a `.txt` file
(any case) is an error naming it, never a review dropped in silence.

The tokenizer is a fixed regex (lower-case words, with apostrophes, and single punctuation
marks; HTML line breaks removed) and the vocabulary is built from the training text only, so
no test word leaks into it and nothing is downloaded. Ids: 0 padding, 1 unknown word, then the
`vocab_size - 2` most frequent training words (count >= min_freq; ties broken alphabetically).
Each review keeps its first `max_len` tokens.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional

import torch

from slam_bench.data.base import Dataset
from slam_bench.data.files import (MalformedDataError, PathLike, data_root, entry_kind,
                                   read_text, require, visible_entries)
from slam_bench.data.paper import IMDB_DIR

PAD, UNK = 0, 1
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?.,;:()\"-]")
# The published names are <id>_<rating>.txt; a copy that went through a case-folding file
# system or tool may say .TXT, which is read the same.
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(_BREAK.sub(" ", text).lower())


def _read_folder(folder: Path, labeled: bool = True) -> list[str]:
    require(folder, "a folder of review text files (<id>_<rating>.txt)", is_dir=True)
    files = visible_entries(folder)
    for p in files:
        kind = entry_kind(p)
        if kind != "file":
            raise MalformedDataError(p, f"is not a file (it is a {kind}); expected a review text file "
                                        f"(<id>_<rating>.txt) in {folder}")
        if p.suffix.lower() != ".txt":
            # Skipping it could drop reviews silently (and change the class balance).
            raise MalformedDataError(p, f"has the extension {p.suffix!r}; expected only review "
                                        f"text files (.txt, any case) in {folder}")
    if not files:
        raise MalformedDataError(folder, "holds no review files (<id>_<rating>.txt); expected the "
                                         "reviews of the aclImdb archive")
    if labeled:
        for p in files:
            if not _NAME.match(p.name):
                raise MalformedDataError(p, "review files must be named <id>_<rating>.txt")
        files.sort(key=lambda p: int(_NAME.match(p.name).group(1)))
    else:
        files.sort()
    return [read_text(p, "a review text file (UTF-8)") for p in files]


def build_vocab(token_lists, vocab_size: int, min_freq: int) -> dict[str, int]:
    """word -> id (2..vocab_size-1) for the most frequent words; 0 and 1 are PAD and UNK."""
    counts = Counter(t for toks in token_lists for t in toks)
    ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return {w: i + 2 for i, w in enumerate(ranked[: vocab_size - 2])}


def encode(token_lists, vocab: dict[str, int], max_len: int) -> torch.Tensor:
    """Token lists -> int64 (N, max_len), first max_len tokens, right-padded with 0."""
    out = torch.zeros((len(token_lists), max_len), dtype=torch.int64)
    for i, toks in enumerate(token_lists):
        ids = [vocab.get(t, UNK) for t in toks[:max_len]]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def load_imdb(root: Optional[PathLike] = None, *, max_len: int = 256, vocab_size: int = 20000,
              min_freq: int = 2, vocab_from_unsup: bool = False) -> Dataset:
    """IMDB as x int64 (N, max_len) token ids (0 = padding), y int64 (N,) in {0 neg, 1 pos}.

    Args:
        root: the data root (holds aclImdb/); default $SLAM_BENCH_DATA.
        max_len: tokens kept per review (the head of the review).
        vocab_size: ids in the vocabulary, PAD and UNK included.
        min_freq: a word needs this many training occurrences to get its own id.
        vocab_from_unsup: also count the 50k unlabeled train/unsup reviews when building the
            vocabulary (still training text; never test text).
    """
    for name, v, lo in (("max_len", max_len, 1), ("vocab_size", vocab_size, 3), ("min_freq", min_freq, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    base = data_root(root) / IMDB_DIR
    require(base, f"the IMDB folder {IMDB_DIR}/ (train/ and test/ with pos/ and neg/) under the data root",
            is_dir=True)
    splits = {}
    for split in ("train", "test"):
        neg, pos = (_read_folder(base / split / c) for c in ("neg", "pos"))
        splits[split] = ([tokenize(t) for t in neg + pos],
                         torch.tensor([0] * len(neg) + [1] * len(pos), dtype=torch.int64))
    vocab_text = splits["train"][0]
    if vocab_from_unsup:
        vocab_text = vocab_text + [tokenize(t) for t in _read_folder(base / "train" / "unsup", False)]
    vocab = build_vocab(vocab_text, vocab_size, min_freq)
    x = {s: encode(toks, vocab, max_len) for s, (toks, _) in splits.items()}
    lengths = torch.tensor([len(t) for t in splits["train"][0]], dtype=torch.float64)
    return Dataset("imdb", x["train"], splits["train"][1], x["test"], splits["test"][1], 2, "tokens",
                   {"vocab_size": len(vocab) + 2, "vocab_size_cap": vocab_size, "max_len": max_len,
                    "min_freq": min_freq, "vocab_from_unsup": vocab_from_unsup,
                    "truncated_fraction_train": float((lengths > max_len).double().mean())
                    if len(lengths) else 0.0})
