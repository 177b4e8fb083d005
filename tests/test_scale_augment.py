"""Batched GPU-style augmentation: each output image is a crop of its own padded image,
flipped or not, and normalization matches the per-channel formula."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slam_bench.data.augment import channel_stats, normalize, random_crop_flip


def test_each_output_is_a_padded_crop_or_its_mirror():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 6, 5), dtype=torch.uint8, generator=g)
    out = random_crop_flip(x, padding=2, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (2, 2, 2, 2))
    seen_flip = seen_shift = False
    for i in range(16):
        matches = [(dy, dx, fl) for dy in range(5) for dx in range(5) for fl in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(-1) if fl else c)(padded[i, :, dy:dy + 6, dx:dx + 5]))]
        assert matches, f"image {i} is not a crop of its padded input"
        seen_flip |= any(fl for *_, fl in matches) and not any(not fl for *_, fl in matches)
        seen_shift |= all((dy, dx) != (2, 2) for dy, dx, _ in matches)
    assert seen_flip and seen_shift  # 16 draws: both happen (fixed seed)


def test_no_padding_no_flip_is_identity_and_draws_follow_the_generator():
    x = torch.rand(4, 3, 5, 5)
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)
    a = random_crop_flip(x, 2, generator=torch.Generator().manual_seed(3))
    b = random_crop_flip(x, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, padding=-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_crop_flip(x[0])


def test_channel_stats_and_normalize():
    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=3)  # chunked accumulation = one-shot formula
    ref = x.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), ref.mean((0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), ref.std((0, 2, 3), unbiased=False))
    z = normalize(x, mean, std)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="mean and std"):
        normalize(x, [0.5], [0.5])
