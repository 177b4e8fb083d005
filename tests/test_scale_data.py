"""Paper-scale loaders read tiny files written in the real published formats."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from scale_fixtures import (CELEBA_ATTRS, make_celeba, make_cifar10, make_cifar100, make_imagenet,
                            make_imdb)

from slam_bench.data.celeba import load_celeba
from slam_bench.data.cifar import load_cifar10, load_cifar100
from slam_bench.data.files import ENV_VAR, DataMissingError, MalformedDataError
from slam_bench.data.imagenet import load_imagenet
from slam_bench.data.imdb import UNK, load_imdb

LOADERS = {"cifar-10-batches-py": load_cifar10, "cifar-100-python": load_cifar100,
           "celeba": load_celeba, "imagenet": load_imagenet, "aclImdb": load_imdb}


def test_cifar10_pixels_and_labels_in_file_order(tmp_path):
    written = make_cifar10(tmp_path)
    ds = load_cifar10(tmp_path)
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape == (20, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == written["y_train"]
    assert ds.y_test.tolist() == written["y_test"] and ds.num_classes == 10 and ds.input_kind == "image"
    # The 3072 bytes of a row are 1024 R, 1024 G, 1024 B values, each a row-major 32 x 32 plane.
    row = written["x_train"][7]
    assert ds.x_train[7, 1, 2, 5].item() == row[1024 + 2 * 32 + 5]
    assert np.array_equal(ds.x_test.numpy().reshape(6, -1), written["x_test"])
    assert ds.meta["class_names"][3] == "class3"


def test_cifar100_uses_fine_labels(tmp_path):
    written = make_cifar100(tmp_path)
    ds = load_cifar100(tmp_path)
    assert ds.num_classes == 100 and ds.x_train.shape == (12, 3, 32, 32)
    assert ds.y_train.tolist() == written["y_train"] and ds.y_test.tolist() == written["y_test"]


def test_data_root_from_environment(tmp_path, monkeypatch):
    make_cifar100(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert load_cifar100().x_test.shape[0] == 5
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(DataMissingError, match=ENV_VAR):
        load_cifar100()


@pytest.mark.parametrize("folder", sorted(LOADERS))
def test_absent_data_names_the_expected_path(tmp_path, folder):
    with pytest.raises(DataMissingError) as e:
        LOADERS[folder](tmp_path)
    assert e.value.path == tmp_path / folder and str(tmp_path / folder) in str(e.value)


def test_absent_cifar_batch_names_the_file(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataMissingError, match="data_batch_3"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("content, problem", [
    (b"not a pickle at all", "cannot unpickle"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "no key b'labels'"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "expected uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "outside"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "integer labels"),
])
def test_malformed_cifar_batch_is_a_clear_error(tmp_path, content, problem):
    import pickle
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(content if isinstance(content, bytes) else pickle.dumps(content, protocol=2))
    with pytest.raises(MalformedDataError, match=problem) as e:
        load_cifar10(tmp_path)
    assert e.value.path == path and str(path) in str(e.value)


def test_celeba_attribute_labels_and_official_partitions(tmp_path):
    written = make_celeba(tmp_path)
    ds = load_celeba(tmp_path, image_size=32)
    smiling = written["values"][:, CELEBA_ATTRS.index("Smiling")] == 1
    part = written["partitions"]
    assert ds.num_classes == 2 and ds.x_train.shape == (4, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.y_train.tolist() == smiling[part == 0].astype(int).tolist()
    assert ds.y_test.tolist() == smiling[part == 2].astype(int).tolist()
    assert ds.meta["image_size"] == 32 and ds.meta["attribute"] == "Smiling"
    male = load_celeba(tmp_path, attribute="Male", image_size=16, train_partitions=(0, 1))
    is_male = written["values"][:, CELEBA_ATTRS.index("Male")] == 1
    assert male.y_train.tolist() == is_male[part <= 1].astype(int).tolist()
    with pytest.raises(ValueError, match="attribute must be one of"):
        load_celeba(tmp_path, attribute="Wearing_Crown")


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.replace("7\n", "9\n", 1), "line 1 says 9 images"),
    (lambda t: t.replace(" 1", " 0", 1), "values in"),
    (lambda t: "x\n" + t.split("\n", 1)[1], "line 1 must be the image count"),
])
def test_malformed_celeba_attribute_file_names_the_file(tmp_path, edit, problem):
    make_celeba(tmp_path)
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    path.write_text(edit(path.read_text()))
    with pytest.raises(MalformedDataError, match=problem) as e:
        load_celeba(tmp_path)
    assert e.value.path == path


def test_celeba_missing_image_is_named(tmp_path):
    make_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(MalformedDataError, match="000002.jpg"):
        load_celeba(tmp_path)


def test_imagenet_class_folders_sizes_and_colour_order(tmp_path):
    make_imagenet(tmp_path)
    # A flat-coloured PNG: decoding must give exactly these channel values, in RGB order.
    Image.new("RGB", (50, 30), (10, 200, 30)).save(tmp_path / "imagenet/train/n01443537/zz_flat.png")
    ds = load_imagenet(tmp_path, image_size=24)
    assert ds.num_classes == 3 and ds.x_train.shape == (7, 3, 24, 24) and ds.x_test.shape == (3, 3, 24, 24)
    assert ds.y_train.tolist() == [0, 0, 1, 1, 1, 2, 2] and ds.y_test.tolist() == [0, 1, 2]
    flat = ds.x_train[4]
    assert flat[0].eq(10).all() and flat[1].eq(200).all() and flat[2].eq(30).all()
    sub = load_imagenet(tmp_path, image_size=16, max_train_per_class=1)
    assert sub.y_train.tolist() == [0, 1, 2] and sub.meta["max_train_per_class"] == 1


def test_imagenet_val_class_unknown_to_train_is_an_error(tmp_path):
    make_imagenet(tmp_path)
    extra = tmp_path / "imagenet/val/n99999999"
    extra.mkdir()
    Image.new("RGB", (8, 8)).save(extra / "a.JPEG")
    with pytest.raises(MalformedDataError, match="n99999999"):
        load_imagenet(tmp_path, image_size=16)


def test_corrupt_image_names_the_file(tmp_path):
    make_imagenet(tmp_path)
    bad = tmp_path / "imagenet/train/n01440764/n01440764_00000000.JPEG"
    bad.write_bytes(b"\xff\xd8 this is no jpeg")
    with pytest.raises(MalformedDataError) as e:
        load_imagenet(tmp_path, image_size=16)
    assert e.value.path == bad


def test_image_cache_is_used_and_stays_out_of_the_data_root(tmp_path):
    make_imagenet(tmp_path / "data")
    before = sorted(p for p in (tmp_path / "data").rglob("*"))
    cache = tmp_path / "cache"
    first = load_imagenet(tmp_path / "data", image_size=16, cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and sorted((tmp_path / "data").rglob("*")) == before
    # Overwrite the cache with a marker: a second load must come from it, not from the images.
    cached = torch.load(files[0], weights_only=True)
    cached["x_train"][0].fill_(7)
    torch.save(cached, files[0])
    second = load_imagenet(tmp_path / "data", image_size=16, cache_dir=cache)
    assert second.x_train[0].eq(7).all() and torch.equal(second.x_train[1:], first.x_train[1:])
    load_imagenet(tmp_path / "data", image_size=20, cache_dir=cache)  # another size, another key
    assert len(list(cache.glob("*.pt"))) == 2


def test_imdb_tokens_labels_and_training_only_vocabulary(tmp_path):
    make_imdb(tmp_path)
    ds = load_imdb(tmp_path, max_len=10, min_freq=1)
    assert ds.input_kind == "tokens" and ds.x_train.dtype == torch.int64 and ds.x_train.shape == (6, 10)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 0, 0, 1, 1, 1]
    vocab_size = ds.meta["vocab_size"]
    assert int(ds.x_train.max()) < vocab_size and int(ds.x_test.max()) < vocab_size
    # Reviews are in numeric id order (0, 2, 10): neg id 0 is "Awful. Just awful." = 5 tokens.
    first = ds.x_train[0]
    assert (first[:5] > 0).all() and (first[5:] == 0).all() and first[0] == first[3]
    # "film" (train) has an id; the test copy says "zyzzyva" there, unseen in training: UNK.
    pos_train, pos_test = ds.x_train[5], ds.x_test[5]  # pos id 10: "A wonderful film. ..."
    assert pos_train[2] not in (0, UNK) and pos_test[2] == UNK
    # Only that review has more than 10 tokens (11, with the line break removed): it is cut.
    assert (ds.x_train[5] != 0).all() and ds.meta["truncated_fraction_train"] == pytest.approx(1 / 6)
    with_unsup = load_imdb(tmp_path, max_len=12, min_freq=3, vocab_from_unsup=True)
    assert with_unsup.meta["vocab_size"] == load_imdb(tmp_path, max_len=12, min_freq=3).meta["vocab_size"] + 1


def test_imdb_vocab_cap_and_bad_files(tmp_path):
    make_imdb(tmp_path)
    small = load_imdb(tmp_path, vocab_size=5, min_freq=1)
    assert small.meta["vocab_size"] == 5 and int(small.x_train.max()) == 4
    with pytest.raises(ValueError, match="max_len must be an int"):
        load_imdb(tmp_path, max_len=0)
    bad = tmp_path / "aclImdb/train/pos/7_9.txt"
    bad.write_bytes(b"\xff\xfe\xfa broken")
    with pytest.raises(MalformedDataError, match="UTF-8") as e:
        load_imdb(tmp_path)
    assert e.value.path == bad
    bad.unlink()
    odd = tmp_path / "aclImdb/test/neg/review.txt"
    odd.write_text("no id in this name")
    with pytest.raises(MalformedDataError, match="<id>_<rating>") as e:
        load_imdb(tmp_path)
    assert e.value.path == odd


def test_loaders_do_not_write_into_the_data_root(tmp_path):
    make_celeba(tmp_path)
    make_imdb(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    load_celeba(tmp_path, image_size=16)
    load_imdb(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert os.access(tmp_path, os.W_OK)  # the check above is meaningful: writing was possible
