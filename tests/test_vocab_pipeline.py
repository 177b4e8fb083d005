"""Top-K teacher caches in the benchmark (docs/vocab.md): the cache against the dense one, the
estimators on it, the fused student step's memory, the refusals, the new row columns and cell
names."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from slam_bench import estimators as E
from slam_bench.data import load_dataset
from slam_bench.distributed import DistContext
from slam_bench.models import build_model
from slam_bench.pipeline import methods as M
from slam_bench.pipeline.runner import run_suite
from slam_bench.pipeline.splits import make_split
from slam_bench.pipeline.suites import ModelSpec, TrainSpec, get_suite
from slam_bench.pipeline.teacher import CacheError, derived_key, load_cached, teacher_outputs
from slam_bench.pipeline.train import StudentStep, step_peak_bytes
from slam_bench.report.cells import cell_name, with_cells
from slam_bench.store import read_rows, record_row
from slam_bench.vocab.teacher import TopKProbs

CPU = DistContext.single(torch.device("cpu"))


def _digits_teacher(tmp_path, key, topk=None, dense_key=None):
    ds = load_dataset("digits")
    split = make_split(len(ds.y_train), 60, 100, 0, 400)
    return teacher_outputs(CPU, ds, ds.x_train, ds.y_train, ds.x_test, ds.y_test, split, key,
                           ModelSpec("mlp", {"hidden": (32,), "dropout": 0.2}),
                           TrainSpec(epochs=5, batch_size=32, lr=3e-3), 0, 2, tmp_path,
                           topk=topk, dense_key=dense_key)


def test_a_topk_cache_with_k_equal_c_scattered_back_is_the_dense_cache(tmp_path):
    # Trained and inferred with top-K kept pass by pass (no dense cache to cut it from) ...
    top = _digits_teacher(tmp_path / "a", "k10", topk=10)
    dense = _digits_teacher(tmp_path / "b", "dense")
    for name in ("probs_val", "probs_u", "probs_test"):
        t, d = getattr(top, name), getattr(dense, name)
        assert isinstance(t, TopKProbs) and t.ids.dtype == torch.int32 and t.k == 10
        assert torch.equal(t.dense(), d), name
    assert (top.test_acc, top.val_acc) == (dense.test_acc, dense.val_acc)
    # ... and cut from the dense cache on disk, at K < C: the dense rows' top-K.
    cut = _digits_teacher(tmp_path / "b", derived_key("dense", teacher_topk=3), topk=3,
                          dense_key="dense")
    assert torch.equal(cut.probs_u.ids, TopKProbs.from_dense(dense.probs_u, 3).ids)
    assert cut.cache_bytes() == sum(len(getattr(dense, n)) for n in
                                    ("probs_val", "probs_u", "probs_test")) * 3 * (4 + 4)
    # The K-cache file is checksummed like the dense one: read back equal, and a changed
    # probability is refused.
    path = tmp_path / "a" / "teacher" / "k10.pt"
    again = load_cached(path, "k10")
    assert torch.equal(again.probs_u.probs, top.probs_u.probs) and again.teacher_topk == 10
    state = torch.load(path, weights_only=True)
    state["probs_u"]["probs"][0, 0] += 1e-3
    torch.save(state, path)
    with pytest.raises(CacheError, match="checksum"):
        load_cached(path, "k10")


def _rows_with_support(n, c, k, seed):
    """(n, C) probabilities with exactly k distinct non-zero entries per row."""
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(n, c, dtype=torch.float64)
    ids = torch.rand(n, c, generator=g).argsort(dim=1)[:, :k]
    w = torch.rand(n, k, generator=g, dtype=torch.float64) + 0.05
    return p.scatter_(1, ids, w / w.sum(dim=1, keepdim=True)).float()


@pytest.mark.parametrize("k", [1, 3])
def test_estimators_on_a_topk_cache_equal_the_dense_ones_when_it_holds_all_mass(k):
    c = 12
    val, u = _rows_with_support(300, c, k, 0), _rows_with_support(200, c, k, 1)
    labels = torch.where(torch.rand(300, generator=torch.Generator().manual_seed(2)) < 0.7,
                         val.argmax(dim=1), torch.randint(c, (300,)))
    tv, tu = TopKProbs.from_dense(val, k), TopKProbs.from_dense(u, k)
    assert torch.equal(E.teacher_margin(tu), E.teacher_margin(u))
    assert torch.equal(E.topk_accuracy(tv, labels), E.topk_accuracy(val, labels))
    dense_k, sparse_k = E.choose_k_likelihood(val, labels), E.choose_k_likelihood(tv, labels)
    assert dense_k.params() == sparse_k.params()
    a_dense, a_sparse = E.fit_alpha(val, labels), E.fit_alpha(tv, labels)
    assert a_dense.params() == a_sparse.params()
    assert torch.equal(a_dense.predict(u), a_sparse.predict(tu))
    assert torch.equal(E.fit_weights(val, labels, u), E.fit_weights(tv, labels, tu))
    # Where the top-K drops mass, the estimate is of the cut rows, not of the dense ones.
    full = _rows_with_support(200, c, c, 3)
    assert not torch.equal(E.teacher_margin(TopKProbs.from_dense(full, 1)),
                           E.teacher_margin(full))


def _step(c, fused, h=8, seed=0):
    torch.manual_seed(seed)
    student = build_model("linear", (h,), c)
    vanilla, hp = M.get_method("vanilla"), {"temperature": 1.0}
    g = torch.Generator().manual_seed(seed)
    teacher = torch.softmax(4 * torch.randn(256, c, generator=g), dim=1)
    top = TopKProbs.from_dense(teacher, c if not fused else 5)

    def loss(idx, logits, feats):
        if logits is not None:
            return vanilla.loss(M.Batch(idx, logits, feats, teacher[idx], feats[:, :0], {},
                                        M.Fitted(), hp))
        return vanilla.topk_loss(M.Batch(idx, None, feats, top.rows(idx), feats[:, :0], {},
                                         M.Fitted(), hp, head=student.head, chunk_rows=fused))
    x = torch.randn(256, h, generator=g)
    batch = (torch.arange(200), x[:200], x[200:], torch.randint(c, (56,), generator=g))
    return StudentStep(student, None, loss, 1.0, fused_head=fused), batch, teacher


def test_the_fused_step_on_a_full_cache_is_the_dense_step():
    c = 64
    dense, batch, teacher = _step(c, None)
    student = copy.deepcopy(dense.student)
    top = TopKProbs.from_dense(teacher, c)  # K = C: nothing dropped

    def full_cache(idx, logits, feats):
        return M.get_method("vanilla").topk_loss(M.Batch(
            idx, None, feats, top.rows(idx), feats[:, :0], {}, M.Fitted(), {"temperature": 1.0},
            head=student.head, chunk_rows=16))
    fused = StudentStep(student, None, full_cache, 1.0, fused_head=16)
    ld, lf = dense(*batch), fused(*batch)
    ld.backward()
    lf.backward()
    assert torch.allclose(ld, lf, rtol=1e-5, atol=1e-6)
    for pd_, pf in zip(dense.parameters(), fused.parameters()):
        assert torch.allclose(pd_.grad, pf.grad, rtol=1e-4, atol=1e-6)


def test_the_fused_student_steps_peak_memory_grows_with_c_only_by_weights_and_one_chunk():
    h, chunk, b = 8, 16, 256
    peaks = {}
    for c in (2048, 16384):
        for fused in (chunk, None):
            step, batch, _ = _step(c, fused, h=h)
            peaks[(c, fused)] = step_peak_bytes(step, *batch)
    dc = 16384 - 2048
    grow_fused = peaks[(16384, chunk)] - peaks[(2048, chunk)]
    grow_dense = peaks[(16384, None)] - peaks[(2048, None)]
    # Per extra class, the fused step may add its share of the head's gradients (weight and
    # bias, held by the op and then by .grad: at most 3 copies of H + 1 floats) and of one
    # chunk of logits; the rows of the batch (b x C logits) never.
    bound = dc * 4 * (3 * (h + 1) + chunk)
    assert grow_fused <= bound < dc * 4 * b, (grow_fused, bound)
    # The probe does see a batch of logits where they exist: the dense step grows by more.
    assert grow_dense >= dc * 4 * b, grow_dense


@pytest.mark.parametrize("method", ["taylor_ce", "ups", "vid", "forward"])
def test_methods_needing_the_dense_teacher_are_refused_on_a_topk_cache(method, tmp_path):
    with pytest.raises(ValueError, match=rf"method '{method}' cannot run on a top-K teacher "
                                         rf"cache \(teacher_topk = 5\): .+"):
        M.get_method(method).check_topk(5)
    suite = get_suite("known_noise")
    suite = dataclasses.replace(suite, methods=("teacher", "vanilla", method), hard_methods=())
    suite = suite.with_sizes(True, teacher_topk=(None, 5))
    with pytest.raises(ValueError, match=f"method '{method}' cannot run"):
        run_suite(suite, tmp_path, smoke=True)
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    for ok in ("teacher", "vanilla", "vanilla_av", "weighted", "slam", "slam_normalized"):
        M.get_method(ok).check_topk(5)


def test_slam_normalized_on_a_top1_cache_says_why_it_cannot_run():
    tv = TopKProbs.from_dense(_rows_with_support(50, 6, 3, 0), 1)
    ctx = M.FitContext(tv, torch.zeros(50, dtype=torch.int64), tv, torch.empty(50, 0), 6, 0, 4,
                       M.get_method("slam_normalized").hparams())
    with pytest.raises(ValueError, match="top-1 teacher cache holds only 1 id"):
        M.get_method("slam_normalized").fit(ctx)


def test_the_new_row_columns_round_trip_and_dense_and_topk_rows_of_a_trial_coexist(tmp_path):
    path = tmp_path / "runs" / "s.csv"
    row = {"suite": "s", "variant": "full", "dataset": "d", "labeled_size": 10, "split_seed": 0,
           "train_seed": 1000, "method": "slam", "config_hash": "0a1b", "test_acc": 0.5}
    old = {k: v for k, v in row.items()}  # a row written before top-K caches (no column)
    record_row(path, old)
    record_row(path, {**row, "teacher_topk": 20, "teacher_cache_bytes": 3 * 2 ** 33,
                      "student_peak_bytes": 123456789, "test_acc": 0.4})
    df = read_rows(path)
    assert sorted(df.teacher_topk) == ["20", "dense"]
    k = df[df.teacher_topk == "20"].iloc[0]
    assert (k.teacher_cache_bytes, k.student_peak_bytes) == (3 * 2 ** 33, 123456789)
    assert str(df.teacher_cache_bytes.dtype) == "float64"  # empty in the dense row
    # The dense row recorded again (now naming its cache) replaces the one without the column.
    record_row(path, {**row, "teacher_topk": "dense", "test_acc": 0.6})
    df = read_rows(path)
    assert len(df) == 2 and float(df[df.teacher_topk == "dense"].test_acc.iloc[0]) == 0.6
    with pytest.raises(ValueError, match="teacher_topk"):
        record_row(path, {**row, "teacher_topk": -3})
    cells = with_cells(df)
    assert set(cells.cell) == {"d_10", "d_10_top20"}
    assert cell_name("d", 10, teacher_topk="5") == "d_10_top5"
