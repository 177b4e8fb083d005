"""Files under --data-root are untrusted: a crafted CIFAR pickle cannot run code or exhaust
memory, stray hidden or empty folders cannot shift labels, decompression bombs, dangling
symlinks, paths that leave the data root and unexpected files are errors naming the path."""
from __future__ import annotations

import os
import pickle
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from scale_fixtures import make_celeba, make_cifar10, make_imagenet, make_imdb

from slam_bench.data.celeba import load_celeba
from slam_bench.data.cifar import load_cifar10
from slam_bench.data.files import DataFileError, MalformedDataError
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


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_genuine_cifar_pickles_load_under_every_protocol_numpy_writes(tmp_path, protocol):
    written = make_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for f in base.iterdir():  # re-pickle every file with this protocol
        with open(f, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
        if f.name == "data_batch_2":  # labels as a numpy array, a numpy scalar beside them
            obj[b"labels"] = np.asarray(obj[b"labels"], dtype=np.int64)
            obj[b"num_cases"] = np.int64(4)
        f.write_bytes(pickle.dumps(obj, protocol=protocol))
    ds = load_cifar10(tmp_path)
    assert torch.equal(ds.y_train, torch.tensor(written["y_train"]))
    assert np.array_equal(ds.x_train.numpy().reshape(20, -1), written["x_train"])


def _shared_nest(levels: int, width: int = 10):
    """A list of `width` references to a list of `width` references ... (width**levels ints):
    a few hundred bytes pickled, width**levels x 8 bytes once numpy expands it."""
    nest = [0] * width
    for _ in range(levels - 1):
        nest = [nest] * width
    return nest


@pytest.mark.parametrize("key", [b"data", b"labels"])
def test_a_small_pickle_of_a_huge_shared_structure_is_refused_before_it_is_built(tmp_path, key):
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    obj[key] = _shared_nest(9)  # 10**9 entries: 8 GB as an int64 array
    path.write_bytes(pickle.dumps(obj, protocol=2))
    assert path.stat().st_size < 8000  # the 6 KB of b"data", or 300 bytes of nested lists
    start = time.perf_counter()
    with pytest.raises(MalformedDataError, match="describes a structure of more than .* bytes "
                                                 ".*refused before building it") as e:
        load_cifar10(tmp_path)
    assert e.value.path == path and time.perf_counter() - start < 1.0


def _deep(levels: int):
    nest = [0]
    for _ in range(levels):
        nest = [nest]
    return nest


class _CallNdarray:
    """Unpickles to numpy.ndarray((10**12,)): an 8 TB allocation if ndarray were callable."""

    def __reduce__(self):
        return (np.ndarray, ((10 ** 12,),))


@pytest.mark.parametrize("obj, problem", [
    (_shared_nest(1, 1), "holds a list"),
    ({b"data": _deep(20), b"labels": [0]}, "nests deeper than 16 levels"),
    ({b"data": _CallNdarray(), b"labels": [0]}, "cannot unpickle"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], [1]]}, "list of integer labels"),
    ({b"data": [[0] * 3072] * 2, b"labels": [0, 1]}, "expected a uint8 numpy array"),
])
def test_pickles_that_are_no_cifar_batch_are_errors_naming_the_file(tmp_path, obj, problem):
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(MalformedDataError, match=problem) as e:
        load_cifar10(tmp_path)
    assert e.value.path == path


def test_out_of_band_pickle_buffers_are_refused(tmp_path):
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    buffers = []
    obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    path.write_bytes(pickle.dumps(obj, protocol=5, buffer_callback=buffers.append))
    with pytest.raises(MalformedDataError, match="outside the file") as e:
        load_cifar10(tmp_path)
    assert e.value.path == path and buffers


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


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header announcing width x height pixels, with ten rows of zeros: a few
    hundred bytes that would need width x height x 3 bytes to decode."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    rows = zlib.compress(b"".join(b"\0" + bytes(width * 3) for _ in range(10)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(20000, 10000), (10000, 9000)])
def test_a_decompression_bomb_is_an_error_naming_it(tmp_path, size):
    # 20000 x 10000 is over twice PIL's limit (its DecompressionBombError); 10000 x 9000 is
    # between once and twice (PIL only warns): both are refused before decoding.
    make_imagenet(tmp_path)
    bomb = tmp_path / "imagenet" / "train" / "n01443537" / "zz_bomb.png"
    bomb.write_bytes(_png_header_only(*size))
    with pytest.raises(MalformedDataError, match="decompression bomb") as e:
        load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == bomb


def test_a_file_in_png_clothes_that_is_another_format_is_not_decoded(tmp_path):
    from PIL import Image
    make_imagenet(tmp_path)
    odd = tmp_path / "imagenet" / "train" / "n01443537" / "zz_odd.png"
    Image.new("RGB", (16, 16)).save(odd, format="BMP")  # only JPEG and PNG decoders run
    with pytest.raises(MalformedDataError, match="cannot decode") as e:
        load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == odd


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("what", ["dangling symlink", "file"])
def test_a_class_entry_that_is_no_folder_is_an_error_not_a_label_shift(tmp_path, split, what):
    make_imagenet(tmp_path)
    entry = tmp_path / "imagenet" / split / "n01000000"  # sorts before every class
    if what == "dangling symlink":
        entry.symlink_to(tmp_path / "unmounted" / "n01000000")
    else:
        entry.write_bytes(b"an unextracted class archive")
    with pytest.raises(MalformedDataError, match=f"is a {what} among the class folders") as e:
        load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == entry


@pytest.mark.parametrize("name, problem", [("x.gif", "extension '.gif'"),
                                           ("x.JPEG.part", "extension '.part'"),
                                           ("sub", "is a folder in the class folder")])
def test_unexpected_entries_in_a_class_folder_are_named(tmp_path, name, problem):
    make_imagenet(tmp_path)
    entry = tmp_path / "imagenet" / "train" / "n01484850" / name
    if name == "sub":
        entry.mkdir()
    else:
        entry.write_bytes(b"GIF89a")
    with pytest.raises(MalformedDataError, match=problem) as e:
        load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == entry


def test_an_image_that_is_a_dangling_symlink_is_named(tmp_path):
    make_imagenet(tmp_path)
    link = tmp_path / "imagenet" / "val" / "n01440764" / "zz.JPEG"
    link.symlink_to(tmp_path / "gone.JPEG")
    with pytest.raises(MalformedDataError, match="dangling symlink") as e:
        load_imagenet(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == link


@pytest.mark.parametrize("name", ["list_attr_celeba.txt", "list_eval_partition.txt"])
def test_a_celeba_list_that_is_not_utf8_is_an_error_naming_it(tmp_path, name):
    make_celeba(tmp_path)
    path = tmp_path / "celeba" / name
    path.write_bytes(path.read_bytes().replace(b"000002.jpg", b"00000\xe9.jpg"))
    with pytest.raises(MalformedDataError, match="is not UTF-8") as e:
        load_celeba(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == path and str(path) in str(e.value)


@pytest.mark.parametrize("listed", ["{outside}", "../{name}", "sub/../../{name}", "..", "a\\b.jpg"])
def test_celeba_image_names_cannot_leave_the_images_folder(tmp_path, listed):
    make_celeba(tmp_path)
    outside = tmp_path / "elsewhere.jpg"  # a real image outside img_align_celeba/
    (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").rename(outside)
    name = listed.format(outside=outside, name="elsewhere.jpg")
    attrs = tmp_path / "celeba" / "list_attr_celeba.txt"
    attrs.write_text(attrs.read_text().replace("000001.jpg", name))
    part = tmp_path / "celeba" / "list_eval_partition.txt"
    part.write_text(part.read_text().replace("000001.jpg", name))
    with pytest.raises(MalformedDataError, match="is not a bare image file name") as e:
        load_celeba(tmp_path, image_size=8, num_workers=1)
    assert e.value.path == attrs


def test_imdb_reads_reviews_named_in_upper_case(tmp_path):
    make_imdb(tmp_path)
    clean = load_imdb(tmp_path)
    for p in (tmp_path / "aclImdb").rglob("*.txt"):
        p.rename(p.with_suffix(".TXT"))
    again = load_imdb(tmp_path)
    assert torch.equal(again.x_train, clean.x_train) and torch.equal(again.y_test, clean.y_test)


def test_imdb_other_files_in_a_review_folder_are_named(tmp_path):
    make_imdb(tmp_path)
    stray = tmp_path / "aclImdb" / "train" / "neg" / "11_3.txt~"
    stray.write_text("an editor's backup")
    with pytest.raises(MalformedDataError, match="extension '.txt~'") as e:
        load_imdb(tmp_path)
    assert e.value.path == stray


def test_every_data_error_is_one_type_with_a_path(tmp_path):
    from slam_bench.data.files import DataMissingError
    assert issubclass(MalformedDataError, DataFileError) and issubclass(DataMissingError, DataFileError)
    with pytest.raises(DataFileError) as e:
        load_imdb(tmp_path)
    assert e.value.path == tmp_path / "aclImdb"


def test_a_memo_index_far_out_of_sequence_is_refused(tmp_path):
    # PROTO 2, EMPTY_DICT, LONG_BINPUT 2**31 - 1, STOP: the C unpickler would size its memo
    # table to 2**31 entries (16 GB) for these 8 bytes.
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    path.write_bytes(b"\x80\x02}r\xff\xff\xff\x7f.")
    with pytest.raises(MalformedDataError, match="memo entry 2147483647 out of sequence") as e:
        load_cifar10(tmp_path)
    assert e.value.path == path
