"""Files under --data-root are untrusted: a crafted CIFAR pickle cannot run code, stray hidden
or empty folders cannot shift labels, and broken CelebA/IMDB layouts are clear errors."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from scale_fixtures import make_celeba, make_cifar10, make_imagenet, make_imdb

from slam_bench.data.celeba import load_celeba
from slam_bench.data.cifar import load_cifar10
from slam_bench.data.files import MalformedDataError
from slam_bench.data.imagenet import load_imagenet
from slam_bench.data.imdb import load_imdb


class _Payload:
    """Unpickling this calls os.system: what a crafted batch would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["whole file", "inside the dict"])
def test_a_crafted_cifar_pickle_is_refused_without_running_it(tmp_path, where):
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = _Payload(marker)
    obj = payload if where == "whole file" else {b"data": np.zeros((2, 3072), np.uint8),
                                                  b"labels": [0, 1], b"extra": payload}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(MalformedDataError, match=r"refers to (posix|os)\.system, which no CIFAR "
                                                 r"batch holds; refused") as e:
        load_cifar10(tmp_path)
    assert e.value.path == path and not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_genuine_cifar_pickles_still_load_under_either_protocol(tmp_path, protocol):
    written = make_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for f in base.iterdir():  # re-pickle every file with this protocol
        with open(f, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
        f.write_bytes(pickle.dumps(obj, protocol=protocol))
    ds = load_cifar10(tmp_path)
    assert torch.equal(ds.y_train, torch.tensor(written["y_train"]))


def test_imagenet_skips_hidden_entries_so_labels_do_not_shift(tmp_path):
    make_imagenet(tmp_path)
    clean = load_imagenet(tmp_path, image_size=8, num_workers=1)
    train = tmp_path / "imagenet" / "train"
    (train / ".ipynb_checkpoints").mkdir()  # sorts before every wnid
    first = sorted(train.iterdir())[1]
    (first / "._macos_fork.JPEG").write_bytes(b"not an image")  # a hidden file too
    again = load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert torch.equal(again.y_train, clean.y_train) and again.num_classes == clean.num_classes


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_empty_imagenet_class_folder_is_an_error_naming_it(tmp_path, split):
    make_imagenet(tmp_path)
    empty = tmp_path / "imagenet" / split / "n01443537"
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(MalformedDataError, match="class folder without image files") as e:
        load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == empty


def test_celeba_duplicate_file_names_are_an_error(tmp_path):
    make_celeba(tmp_path)
    attrs = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = attrs.read_text().splitlines()
    lines[3] = lines[2].split()[0] + " " + " ".join(lines[3].split()[1:])
    attrs.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedDataError, match="000001.jpg more than once") as e:
        load_celeba(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == attrs
    make_celeba(tmp_path)  # and in the partition list
    part = tmp_path / "celeba" / "list_eval_partition.txt"
    part.write_text(part.read_text() + "000001.jpg 2\n")
    with pytest.raises(MalformedDataError, match="line 8: 000001.jpg is listed more than once"):
        load_celeba(tmp_path, image_size=8, num_workers=1)


def test_celeba_without_a_test_partition_is_an_error(tmp_path):
    make_celeba(tmp_path, partitions=(0, 0, 0, 1, 1))
    with pytest.raises(MalformedDataError, match="no image .* in partition 2, so the test split "
                                                 "would be empty") as e:
        load_celeba(tmp_path, image_size=8, num_workers=1)
    assert e.value.path.name == "list_eval_partition.txt"


def test_imdb_empty_class_folder_is_an_error(tmp_path):
    make_imdb(tmp_path)
    neg = tmp_path / "aclImdb" / "test" / "neg"
    for f in neg.iterdir():
        f.unlink()
    with pytest.raises(MalformedDataError, match="holds no review files") as e:
        load_imdb(tmp_path)
    assert e.value.path == neg


def test_imdb_directory_in_place_of_a_review_is_an_error(tmp_path):
    make_imdb(tmp_path)
    bad = tmp_path / "aclImdb" / "train" / "pos" / "77_9.txt"
    bad.mkdir()
    with pytest.raises(MalformedDataError, match="is not a file") as e:
        load_imdb(tmp_path)
    assert e.value.path == bad
