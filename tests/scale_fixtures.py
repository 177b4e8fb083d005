"""Tiny copies of the paper-scale datasets in their published on-disk formats.

Each `make_*` writes under `root` exactly the files the real archive has (same names, same
pickle keys, real JPEG/PNG files, the real text layouts) with a handful of examples, and
returns the labels it wrote so a test can check they are read back in order.
"""
from __future__ import annotations

import pickle
import socket
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_images(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def learnable(rng, labels, shape) -> np.ndarray:
    """uint8 images whose brightness encodes the label, so a few steps can beat chance."""
    base = 40 + 160 * (np.asarray(labels) % 2)  # two brightness levels (labels 0/1 in suites)
    noise = rng.integers(-30, 31, (len(labels), *shape))
    return np.clip(base.reshape(-1, *[1] * len(shape)) + noise, 0, 255).astype(np.uint8)


def make_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0,
                 labels_used: int = 10) -> dict:
    """cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta.

    labels_used < 10 draws labels from 0..labels_used-1 only, with images whose brightness
    follows the label (for end-to-end suite runs that should beat chance)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    out = {"x_train": [], "y_train": []}

    def draw(n):
        y = rng.integers(0, labels_used, n)
        x = cifar_images(rng, n) if labels_used == 10 else learnable(rng, y, (3072,))
        return x, y.tolist()

    for i in range(1, 6):
        x, y = draw(per_batch)
        _pickle(base / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(),
                                           b"labels": y, b"data": x,
                                           b"filenames": [b"f.png"] * per_batch})
        out["x_train"].append(x)
        out["y_train"] += y
    x, y = draw(n_test)
    _pickle(base / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": y, b"data": x,
                                  b"filenames": [b"f.png"] * n_test})
    _pickle(base / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)],
                                    b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    out.update(x_train=np.concatenate(out["x_train"]), x_test=x, y_test=y)
    return out


def make_cifar100(root: Path, n_train: int = 12, n_test: int = 5, seed: int = 0,
                  labels_used: int = 100) -> dict:
    """cifar-100-python/ with train, test, meta (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, labels_used, n)
        x = cifar_images(rng, n) if labels_used == 100 else learnable(rng, y, (3072,))
        fine = y.tolist()
        _pickle(base / split, {b"filenames": [b"f.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                               b"data": x})
        out[f"x_{split}"], out[f"y_{split}"] = x, fine
    _pickle(base / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return out


def _write_image(path: Path, rng, size: tuple, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


CELEBA_ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Male", "Smiling", "Young"]


def make_celeba(root: Path, partitions=(0, 0, 0, 0, 1, 2, 2), seed: int = 0) -> dict:
    """celeba/ with img_align_celeba/*.jpg (178 x 218 like the real ones), the attribute list
    (count line, names line with its trailing space, two-space aligned values) and the
    partition list. Real CelebA has 40 attributes; five keep the file small."""
    rng = np.random.default_rng(seed)
    base = root / "celeba"
    n = len(partitions)
    values = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRS)))
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    for f in files:
        _write_image(base / "img_align_celeba" / f, rng, (178, 218), "JPEG")
    lines = [str(n), " ".join(CELEBA_ATTRS) + " "]
    lines += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{f} {p}\n" for f, p in zip(files, partitions)))
    return {"values": values, "partitions": np.array(partitions), "files": files}


def make_imagenet(root: Path, classes=("n01440764", "n01443537", "n01484850"), per_class: int = 2,
                  per_class_val: int = 1, seed: int = 0) -> dict:
    """imagenet/{train,val}/<wnid>/*.JPEG (and one PNG per class), of varied sizes."""
    rng = np.random.default_rng(seed)
    base = root / "imagenet"
    for split, count in (("train", per_class), ("val", per_class_val)):
        for c in classes:
            for j in range(count):
                fmt, ext = ("PNG", "png") if j == 1 else ("JPEG", "JPEG")
                size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
                _write_image(base / split / c / f"{c}_{j:08d}.{ext}", rng, size, fmt)
    return {"classes": list(classes)}


REVIEWS = {
    "pos": ["A wonderful film.<br /><br />I loved it, great acting!",
            "Great story and great music; wonderful.", "Loved every minute of it."],
    "neg": ["Terrible plot. I hated it.<br />Boring!", "Boring and terrible acting, awful music.",
            "Awful. Just awful."],
}


WORDS = {"pos": ["great", "wonderful", "loved", "superb", "moving"],
         "neg": ["awful", "boring", "terrible", "hated", "dull"]}
FILLER = ["the", "film", "plot", "acting", "was", "and", "music", "story", "a", "it"]


def generated_reviews(label: str, n: int, seed: int) -> list[str]:
    """n reviews mixing filler words with this label's sentiment words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(FILLER + WORDS[label] * 2, size=int(rng.integers(5, 30))))
            + rng.choice([".", "!", "<br /><br />Really."]) for _ in range(n)]


def make_imdb(root: Path, unsup: bool = True, extra_per_class: int = 0) -> dict:
    """aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt and train/unsup/<id>_0.txt.

    extra_per_class adds that many generated reviews per class and split (ids from 100)."""
    base = root / "aclImdb"
    for split in ("train", "test"):
        for label, texts in REVIEWS.items():
            extra = generated_reviews(label, extra_per_class, seed=len(split) + len(label))
            for j, t in enumerate(extra):
                rating = 9 if label == "pos" else 2
                p = base / split / label / f"{100 + j}_{rating}.txt"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(t)
            for i, t in enumerate(texts):
                rating = 8 + i if label == "pos" else 1 + i
                # ids written out of order to check the numeric sort (10 after 2)
                rid = (10, 2, 0)[i]
                p = base / split / label / f"{rid}_{rating}.txt"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(t if split == "train" else t.replace("film", "zyzzyva"))
    if unsup:
        p = base / "train" / "unsup" / "0_0.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("unlabeledword unlabeledword unlabeledword")
    return {"reviews": REVIEWS}


def one_thread():
    """Generator for an autouse fixture: run torch single-threaded, then restore.

    On a shared 2-core CI runner (pytest -n 2), torch's default of one OpenMP thread per core
    in each worker oversubscribes the cores; spinning threads then make small conv forwards
    100x slower (measured: MobileNetV2 on 16 px, 10 ms alone vs 3-20 s).
    """
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    """A free TCP port on the loopback interface for a test's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(fn, args: tuple, nprocs: int, timeout_s: float = 180) -> None:
    """Run fn(rank, *args) in `nprocs` fresh processes and wait for them (raises on failure).

    The ranks come from a fork server that imported torch (and torch._dynamo, which DDP
    imports) once: plain fork is unsafe once this process has used OpenMP (the children
    wait forever on the parent's thread pool), and spawn would import torch per rank.
    """
    import multiprocessing

    import torch.multiprocessing as tmp

    multiprocessing.set_forkserver_preload(["torch", "torch._dynamo", "slam_bench.cli.ddp",
                                            "sklearn.isotonic"])
    ranks = tmp.start_processes(fn, args=args, nprocs=nprocs, join=False,
                                start_method="forkserver")
    # A hung rank (e.g. a collective that never completes) must fail the test, not stall CI.
    deadline = time.monotonic() + timeout_s
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ranks.processes:
                p.kill()
            raise TimeoutError(f"DDP ranks still running after {timeout_s} s")
