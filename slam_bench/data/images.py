"""Decode image files (JPEG/PNG) to one uint8 (N, 3, S, S) tensor, with an optional cache.

Used by the CelebA and ImageNet loaders. Images are decoded once, resized to a fixed side S
and kept in memory as uint8 so a whole split can live on the GPU: at S = 64 ImageNet's train
split is 1.28M x 12 KiB = 15.7 GB, at full resolution (about 400 x 350) it would be ~550 GB.

Resizing: the shorter side goes to S with PIL's `resample` filter, then the centre S x S crop
is kept (the crop loses the long side's margins, never distorts the aspect ratio).

Image files are untrusted. A file whose header announces more than `MAX_IMAGE_PIXELS` pixels
is refused before its pixels are decoded (a 24 KB PNG can announce 20000 x 10000 pixels and
need 600 MB to decode): this limit is ours, whatever PIL's global `Image.MAX_IMAGE_PIXELS`
says. Any failure to decode a file is a MalformedDataError naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from slam_bench.data.files import MalformedDataError, PathLike

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGE_FORMATS = ("JPEG", "PNG")  # by content: some ImageNet ".JPEG" files are PNGs
# PIL's default limit (about 0.25 GiB of RGB pixels, e.g. 10000 x 8900). The largest
# ImageNet and CelebA images are far below it.
MAX_IMAGE_PIXELS = 89_478_485
RESAMPLE = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (pixels per side), got {image_size!r}")
    return image_size


def check_resample(resample) -> None:
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")


def decode_one(path: Path, size: int, resample: str) -> np.ndarray:
    """One file -> uint8 (3, size, size): shorter side to `size`, centre crop."""
    try:
        # Only the formats the datasets use: PIL's other plugins (EPS runs Ghostscript, TIFF
        # and PSD parse far more) never see an untrusted file.
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            w, h = img.size  # from the header: nothing decoded yet
            if w * h > MAX_IMAGE_PIXELS:
                raise MalformedDataError(path, f"announces {w} x {h} = {w * h} pixels, more than "
                                               f"the {MAX_IMAGE_PIXELS} an image may have here "
                                               f"(a decompression bomb, or not a dataset image)")
            # JPEG draft mode decodes at a reduced scale (>= the target): several times faster
            # for large images and no visible loss once resized down.
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((nw, nh), RESAMPLE[resample])
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            arr = np.asarray(img, dtype=np.uint8)
    except MalformedDataError:
        raise
    except Image.DecompressionBombError as e:  # over twice PIL's own global limit
        raise MalformedDataError(path, f"is refused as a decompression bomb ({e})") from None
    except Exception as e:  # noqa: BLE001
        # A corrupt or crafted file makes PIL's plugins raise almost anything (OSError,
        # SyntaxError, ValueError, struct.error, EOFError...): the file is named.
        raise MalformedDataError(path, f"cannot decode as an image ({type(e).__name__}: {e})") from e
    return arr.transpose(2, 0, 1)


def decode_images(paths: Sequence[Path], size: int, resample: str = "box",
                  num_workers: Optional[int] = None) -> torch.Tensor:
    """Decode `paths` in order to uint8 (N, 3, size, size).

    PIL releases the GIL while decoding and resizing, so a thread pool scales with cores.
    """
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    workers = num_workers or min(32, os.cpu_count() or 1)

    def work(i):
        out[i] = decode_one(paths[i], size, resample)

    # decode_one applies MAX_IMAGE_PIXELS itself; PIL's warning for images between its limit
    # and twice it would only repeat that (or warn about images we accept).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if workers <= 1 or len(paths) < 64:
            for i in range(len(paths)):
                work(i)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(work, range(len(paths)), chunksize=256))
    return torch.from_numpy(out)


def files_digest(paths: Sequence[Path]) -> str:
    """A hash of the file names, sizes and modification times: changes when the data does."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
        except OSError as e:
            raise MalformedDataError(p, f"cannot be read ({e.strerror or e})") from e
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached(cache_dir: Optional[PathLike], key: dict, build):
    """`build()` -> dict of tensors, stored under `cache_dir` keyed by a hash of `key`.

    The cache lives where the caller says (never inside the user's data root); no cache_dir,
    no caching. A damaged cache file is rebuilt rather than trusted.
    """
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(cache_dir).expanduser() / f"{key.get('dataset', 'images')}-{digest}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a partial write from an interrupted run: rebuild
            pass
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensors, tmp)
    os.replace(tmp, path)  # atomic: concurrent ranks never read a half-written file
    return tensors
