"""The "topk", "fused_linear" and "fused_linear_memory" families of `slam-bench profile` and
their checks (no timing asserted here): the CLI writes the CSVs, and the PASS/FAIL checks read
rows correctly (synthetic rows, known answers)."""
from __future__ import annotations

import argparse

import pandas as pd
import pytest
import torch

from slam_bench.cli import profile as cli
from slam_bench.cli import profile_vocab
from slam_bench.profiling import report, vocab_check, vocab_memory, vocab_sweep

TINY = {("topk", "cpu-quick"): vocab_sweep.VocabSweep("t-topk", "topk", ("fp32",), (50,), 4,
                                                       warmup=0, reps=1),
        ("fused_linear", "cpu-quick"): vocab_sweep.VocabSweep("t-fused", "fused_linear",
                                                               ("fp32",), (50,), 4, h=8,
                                                               warmup=0, reps=1)}


def _args(tmp_path, family, *extra):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--quick", "--out", str(tmp_path), "--family", family, *extra])


@pytest.mark.parametrize("family, providers", [("topk", {"slam_bench", "dense"}),
                                               ("fused_linear", {"slam_bench", "unfused", "dense"})])
def test_profile_family_writes_its_csv(tmp_path, monkeypatch, family, providers):
    monkeypatch.setattr(vocab_sweep, "SWEEPS", TINY)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    assert cli.main(_args(tmp_path, family)) == 0
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}-{family}.csv")
    assert list(df.columns) == report.COLUMNS + vocab_sweep.EXTRA_COLUMNS
    ok = df[df["status"] == "ok"]
    assert set(ok["provider"]) == providers and set(ok["mode"]) == {"fwd", "full"}
    assert (ok["ms_median"] > 0).all() and (ok["model_bytes"] > 0).all()
    assert (ok["peak_extra_bytes"] > 0).all() and (ok["K"] == 50).all()
    if family == "fused_linear":
        assert (ok["tflops"] > 0).all() and (ok["matmul_tflops"] > 0).all()
    assert "Liger-Kernel needs a CUDA GPU" in set(df.loc[df["status"] == "skipped", "note"])
    assert (tmp_path / f"{stem}-{family}.png").stat().st_size > 0


def test_profile_memory_family_checks_the_claim(tmp_path, monkeypatch):
    monkeypatch.setattr(profile_vocab, "QUICK_MEMORY_SIZE", dict(n=32, v=512, h=8))
    monkeypatch.setattr(vocab_memory, "METHODS", ("profiler",))
    monkeypatch.setattr(vocab_memory, "memory_rows", _profiler_only(vocab_memory.memory_rows))
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    assert cli.main(_args(tmp_path, "fused_linear_memory", "--check-targets")) == 0
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}-fused_linear_memory.csv")
    assert set(df["provider"]) == {"slam_bench", "unfused", "dense"}
    assert (df["peak_bytes"] > 0).all()


def _profiler_only(fn):
    return lambda *a, **kw: fn(*a, **dict(kw, methods=("profiler",)))


def _mem_row(provider, method, peak, n=4096, v=65536, bound=100 << 20):
    return dict(provider=provider, method=method, peak_bytes=peak, N=n, V=v, bound_bytes=bound)


def test_memory_checks_pass_and_fail():
    nv4 = 4096 * 65536 * 4
    growth = dict(n=4096, n_small=1024, peak=90 << 20, peak_small=85 << 20,
                  allowed_growth=10 << 20)
    good = [_mem_row("slam_bench", "profiler", 80 << 20), _mem_row("dense", "profiler", 2 * nv4)]
    assert [c["result"] for c in vocab_memory.memory_checks(good, growth)] == ["PASS"] * 3
    bad = [_mem_row("slam_bench", "profiler", 120 << 20), _mem_row("dense", "profiler", nv4 // 2)]
    grew = dict(growth, peak=growth["peak_small"] + (11 << 20))
    assert [c["result"] for c in vocab_memory.memory_checks(bad, grew)] == ["FAIL"] * 3


def _sweep_row(kernel, provider, ms, v=128256, peak=0, frac=0.6, h=4096, n=4096):
    return dict(kernel=kernel, provider=provider, mode="full", dtype="bf16", N=n, C=v, H=h,
                K=64, status="ok", ms_median=ms, frac_copy_bw=frac, peak_extra_bytes=peak)


def test_vocab_goals_pass_fail_and_missing():
    rows = [_sweep_row("topk", "slam_bench", 1.0), _sweep_row("topk", "dense", 1.5),
            _sweep_row("fused_linear", "slam_bench", 10.0, peak=300 << 20),
            _sweep_row("fused_linear", "unfused", 9.0), _sweep_row("fused_linear", "liger", 8.0)]
    assert [c["result"] for c in vocab_check.goals(pd.DataFrame(rows))] == ["PASS"] * 5
    rows = [_sweep_row("topk", "slam_bench", 1.0, frac=0.3), _sweep_row("topk", "dense", 1.1),
            _sweep_row("fused_linear", "slam_bench", 20.0, peak=16 << 30),
            _sweep_row("fused_linear", "unfused", 9.0), _sweep_row("fused_linear", "liger", 8.0)]
    assert [c["result"] for c in vocab_check.goals(pd.DataFrame(rows))] == ["FAIL"] * 5
    missing = vocab_check.goals(pd.DataFrame(rows[:1]))
    assert [c["result"] for c in missing[1:]] == ["MISSING"] * 4
