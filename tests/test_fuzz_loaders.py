"""The loaders' contract on untrusted data roots, under seeded random damage.

For every loader, trees and files in the published layout are damaged at random (a seeded
generator: each case is reproducible from its seed, printed on failure). Whatever the damage,
the load either succeeds with the labels that the tree on disk defines (computed here,
independently of the loader), or raises a DataFileError (DataMissingError or
MalformedDataError) whose `.path` is named in its message. Never another exception, never a
silent label shift. Each test stays under a few seconds.
"""
from __future__ import annotations

import pickle
import random
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scale_fixtures import make_celeba, make_cifar10, make_imagenet, make_imdb

from slam_bench.data.celeba import load_celeba
from slam_bench.data.cifar import load_cifar10
from slam_bench.data.files import DataFileError
from slam_bench.data.imagenet import load_imagenet
from slam_bench.data.imdb import load_imdb

CASES = 40


def _outcome(load, seed: int):
    """The dataset, or None when `load` raised a DataFileError naming its path; any other
    exception fails the test with the seed."""
    try:
        return load()
    except DataFileError as e:
        assert str(e.path) in str(e), f"seed {seed}: {e!r} does not name {e.path}"
        return None
    except Exception as e:  # noqa: BLE001 - the contract under test
        pytest.fail(f"seed {seed}: {type(e).__name__} escaped the loader: {e}")


def _visible(folder: Path):
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _png_bomb() -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- ImageNet

def _damage_imagenet(rng: random.Random, base: Path) -> None:
    split = base / rng.choice(["train", "val"])
    classes = [p for p in _visible(split) if p.is_dir()]
    if not classes:
        return
    folder = rng.choice(classes)
    images = [p for p in _visible(folder) if p.is_file()]
    target = rng.choice(images) if images else folder / "x.JPEG"
    name = rng.choice(["n00000001", "n99999999", "zz", "a b", "é"])
    action = rng.randrange(16)
    if action == 0:
        (split / f".hidden{name}").mkdir(exist_ok=True)
    elif action == 1:
        (folder / "._fork.JPEG").write_bytes(b"resource fork")
    elif action == 2:
        (split / name).symlink_to(base / "nowhere" / name)
    elif action == 3:
        (split / f"{name}.tar").write_bytes(b"archive")
    elif action == 4:
        (folder / f"x{rng.choice(['.gif', '.txt', '.JPEG.part', '', '.PNG'])}").write_bytes(b"x")
    elif action == 5:
        data = target.read_bytes() if target.is_file() else b""
        target.write_bytes(data[: rng.randrange(max(1, len(data)))])
    elif action == 6:
        target.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    elif action == 7:
        (folder / "bomb.png").write_bytes(_png_bomb())
    elif action == 8:
        for p in images:
            p.unlink()
    elif action == 9:
        (split / name).mkdir(exist_ok=True)
    elif action == 10 and target.is_file():
        target.rename(target.with_suffix(target.suffix.upper() if rng.random() < 0.5
                                         else target.suffix.lower()))
    elif action == 11 and target.is_file():
        (folder / "link.JPEG").symlink_to(target)
    elif action == 12:
        (folder / "sub").mkdir(exist_ok=True)
    elif action == 13:
        Image.new("RGB", (12, 9), (1, 2, 3)).save(folder / "ok.png", format=rng.choice(["PNG", "JPEG"]))
    elif action == 14:
        (folder / "dangling.JPEG").symlink_to(base / "gone.JPEG")
    else:
        shutil.rmtree(folder)


def _imagenet_labels(split: Path, classes: list[str]) -> list[int]:
    """The labels the tree defines: class index by sorted folder name, files sorted."""
    labels = []
    for i, c in enumerate(classes):
        if (split / c).is_dir():
            labels += [i] * len(_visible(split / c))
    return labels


def _fuzz_trees(tmp_path, make, damage, load, labels, most: int) -> None:
    """CASES fresh trees from make(root), each damaged 1..most times by damage(rng, root):
    load(root) gives the labels(root) of the damaged tree, or a DataFileError naming a path."""
    loaded = 0
    for seed in range(CASES):
        rng = random.Random(seed)
        root = tmp_path / str(seed)
        make(root)
        for _ in range(rng.randint(1, most)):
            damage(rng, root)
        ds = _outcome(lambda: load(root), seed)
        if ds is None:
            continue
        loaded += 1
        assert (ds.num_classes, ds.y_train.tolist(), ds.y_test.tolist()) == labels(root), f"seed {seed}"
    assert 0 < loaded < CASES  # the generator makes both kinds of tree


def test_imagenet_loads_what_the_tree_says_or_names_the_damage(tmp_path):
    def labels(root):
        base = root / "imagenet"
        classes = [p.name for p in _visible(base / "train")]
        return (len(classes), _imagenet_labels(base / "train", classes),
                _imagenet_labels(base / "val", classes))

    _fuzz_trees(tmp_path, make_imagenet, lambda rng, root: _damage_imagenet(rng, root / "imagenet"),
                lambda root: load_imagenet(root, image_size=8, num_workers=1), labels, most=3)


# ---------------------------------------------------------------- CIFAR

def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 4)
    if kind == 0:
        return rng.randrange(-5, 15)
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(6)))
    if kind == 2:
        return np.zeros((rng.randrange(3), rng.choice([3072, 3, 0])),
                        dtype=rng.choice([np.uint8, np.int64, np.float32]))
    if kind == 3:
        return rng.random()
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 5:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(4)))
    if kind == 6:
        return {rng.choice([b"data", b"labels", b"x"]): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    return np.int64(rng.randrange(10))


def _damage_pickle(rng: random.Random, data: bytes) -> bytes:
    action = rng.randrange(5)
    b = bytearray(data)
    if action == 0:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif action == 1:  # truncate
        del b[rng.randrange(len(b)):]
    elif action == 2:  # splice in random bytes
        i = rng.randrange(len(b))
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif action == 3:  # a random structure instead
        return pickle.dumps(_random_value(rng), protocol=rng.randint(0, 5))
    else:  # a valid batch whose labels are damaged
        obj = pickle.loads(data, encoding="bytes")
        obj[b"labels"] = _random_value(rng)
        return pickle.dumps(obj, protocol=rng.randint(2, 5))
    return bytes(b)


def test_cifar_loads_a_batch_or_names_the_damaged_file(tmp_path):
    written = make_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    pristine = {p.name: p.read_bytes() for p in base.iterdir()}
    loaded = 0
    for seed in range(CASES * 5):
        rng = random.Random(seed)
        name = rng.choice(sorted(pristine))
        (base / name).write_bytes(_damage_pickle(rng, pristine[name]))
        ds = _outcome(lambda: load_cifar10(tmp_path), seed)
        if ds is not None:
            loaded += 1
            y = ds.y_train.tolist() + ds.y_test.tolist()
            assert all(0 <= v < 10 for v in y), f"seed {seed}"
            if name == "batches.meta":  # the labels are the untouched batches' own
                assert ds.y_train.tolist() == written["y_train"], f"seed {seed}"
        (base / name).write_bytes(pristine[name])
    assert loaded < CASES * 5


# ---------------------------------------------------------------- CelebA

_TOKENS = ["000001.jpg", "/etc/passwd", "../celeba/000002.jpg", "..", "1", "-1", "0", "2",
           "Smiling", "x" * 300, "１", "²", "\x00", "\t", "000009.jpg", "a\\b"]


def _damage_text(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    action = rng.randrange(6)
    if action == 0:
        words = lines[i].split(b" ")
        words[rng.randrange(len(words))] = rng.choice(_TOKENS).encode()
        lines[i] = b" ".join(words)
    elif action == 1:
        del lines[i]
    elif action == 2:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif action == 3:
        lines[i] = lines[i] + rng.choice([b"\xe9", b"\r", b" ", b"\xff\xfe"])
    elif action == 4:
        lines[0] = str(rng.randrange(12)).encode()
    else:
        lines[i] = b""
    return b"\n".join(lines)


def _celeba_labels(attrs: str, partition: str, attribute: str = "Smiling"):
    lines = attrs.splitlines()
    col = lines[1].split().index(attribute)
    part = dict(line.split() for line in partition.splitlines() if line.split())
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    return ([int(r[1 + col] == "1") for r in rows if part[r[0]] == "0"],
            [int(r[1 + col] == "1") for r in rows if part[r[0]] == "2"])


def test_celeba_loads_what_the_lists_say_or_names_the_damage(tmp_path):
    make_celeba(tmp_path)
    base = tmp_path / "celeba"
    files = ("list_attr_celeba.txt", "list_eval_partition.txt")
    pristine = {n: (base / n).read_bytes() for n in files}
    loaded = 0
    for seed in range(CASES * 2):
        rng = random.Random(seed)
        for n in files:
            (base / n).write_bytes(pristine[n])
        for _ in range(rng.randint(1, 2)):
            n = rng.choice(files)
            (base / n).write_bytes(_damage_text(rng, (base / n).read_bytes()))
        ds = _outcome(lambda: load_celeba(tmp_path, image_size=8, num_workers=1), seed)
        if ds is None:
            continue
        loaded += 1
        y_train, y_test = _celeba_labels(*((base / n).read_text() for n in files))
        assert ds.y_train.tolist() == y_train and ds.y_test.tolist() == y_test, f"seed {seed}"
    assert 0 < loaded < CASES * 2


# ---------------------------------------------------------------- IMDB

def _damage_imdb(rng: random.Random, base: Path) -> None:
    folder = base / rng.choice(["train", "test"]) / rng.choice(["pos", "neg"])
    if not folder.is_dir():
        return
    reviews = [p for p in _visible(folder) if p.is_file()]
    target = rng.choice(reviews) if reviews else folder / "1_1.txt"
    action = rng.randrange(10)
    if action == 0 and target.exists():
        target.rename(target.with_name(target.stem + rng.choice([".TXT", ".Txt", ".txt~", ".md", ""])))
    elif action == 1:
        (folder / ".DS_Store").write_bytes(b"\0\0")
    elif action == 2:
        target.write_bytes(b"caf\xe9")
    elif action == 3:
        (folder / rng.choice(["review.txt", "7.txt", "x_1.txt"])).write_text("no id")
    elif action == 4:
        (folder / "5_5.txt").symlink_to(base / "gone.txt")
    elif action == 5:
        (folder / "6_6.txt").mkdir()
    elif action == 6:
        for p in reviews:
            p.unlink()
    elif action == 7:
        shutil.rmtree(folder)
    elif action == 8:
        (folder / "99_9.TXT").write_text("An upper-case name.")
    else:
        target.write_text("")


def _imdb_counts(base: Path, split: str) -> list[int]:
    return [0] * len(_visible(base / split / "neg")) + [1] * len(_visible(base / split / "pos"))


def test_imdb_loads_what_the_folders_hold_or_names_the_damage(tmp_path):
    def labels(root):
        return 2, _imdb_counts(root / "aclImdb", "train"), _imdb_counts(root / "aclImdb", "test")

    _fuzz_trees(tmp_path, make_imdb, lambda rng, root: _damage_imdb(rng, root / "aclImdb"),
                load_imdb, labels, most=2)
