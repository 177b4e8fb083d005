"""IMDB models on int64 (N, L) token ids with 0 = padding: a transformer teacher and a
bag-of-embeddings student. No pretrained embeddings; `vocab_size` comes from the dataset's
meta (the loader's vocabulary size, PAD and UNK included).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from slam_bench.models.base import Classifier

PAD = 0


def _check(input_shape, vocab_size) -> int:
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise ValueError(f"input_shape must be (L,) for token sequences, got {tuple(input_shape)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2 (pass the dataset's meta['vocab_size']), "
                         f"got {vocab_size!r}")
    return input_shape[0]


class TransformerEncoderBody(nn.Module):
    """Token + learned position embeddings, a pre-norm transformer encoder, masked mean pool.

    Input int64 (N, L') with L' <= max_len; output float (N, d_model).
    """

    def __init__(self, vocab_size, max_len, d_model, n_heads, n_layers, ff_mult, dropout):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # Nested tensors change numerics between train and eval mode; keep one path.
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        pad = tokens == PAD
        # A review with no known token would be all padding: attention over nothing is NaN,
        # so such rows attend to (and pool) their first position instead.
        empty = pad.all(dim=1)
        pad = pad & ~(empty.unsqueeze(1) & (torch.arange(pad.shape[1], device=pad.device) == 0))
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.encoder(self.tok(tokens) + self.pos(pos), src_key_padding_mask=pad)
        h = self.norm(h)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1)


def transformer_text(input_shape: tuple, num_classes: int, *, vocab_size: int, d_model: int = 128,
                     n_heads: int = 4, n_layers: int = 2, ff_mult: int = 4,
                     dropout: float = 0.1) -> Classifier:
    """Transformer encoder classifier for int64 (N, L) tokens; features (N, d_model)."""
    max_len = _check(input_shape, vocab_size)
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
    body = TransformerEncoderBody(vocab_size, max_len, d_model, n_heads, n_layers, ff_mult, dropout)
    return Classifier(body, d_model, num_classes)


class EmbeddingBagBody(nn.Module):
    """Mean of the token embeddings (padding ignored), then one hidden ReLU layer.

    Input int64 (N, L); output float (N, hidden) (or (N, embed_dim) with hidden=0).
    """

    def __init__(self, vocab_size, embed_dim, hidden, dropout):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=PAD)
        self.mlp = (nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, hidden), nn.ReLU())
                    if hidden else nn.Identity())

    def forward(self, tokens: Tensor) -> Tensor:
        return self.mlp(self.bag(tokens))


def embedding_bag_text(input_shape: tuple, num_classes: int, *, vocab_size: int,
                       embed_dim: int = 64, hidden: int = 64, dropout: float = 0.0) -> Classifier:
    """Bag-of-embeddings (fastText-like) classifier for int64 (N, L) tokens."""
    _check(input_shape, vocab_size)
    if hidden < 0:
        raise ValueError(f"hidden must be >= 0 (0 = no hidden layer), got {hidden!r}")
    return Classifier(EmbeddingBagBody(vocab_size, embed_dim, hidden, dropout),
                      hidden or embed_dim, num_classes)
