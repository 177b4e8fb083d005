"""The "topk" and "fused_linear" kernel families of `slam-bench profile` and the GPU check (no
timing asserted here): `--family` writes their rows with the columns of every family, the fused
family's memory claim is checked on its peak rows, each provider is credited with the bytes it
moves, and the goals and targets read rows correctly (synthetic rows, known answers)."""
from __future__ import annotations

import argparse

import pandas as pd
import pytest
import torch

from slam_bench.cli import profile as cli
from slam_bench.profiling import (fused_linear_checks, fused_linear_family, fused_linear_memory,
                                  report, topk_checks, topk_family)
from profiling_fixtures import TINY_MEMORY, tiny_cpu_sweep


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--quick", "--out", str(tmp_path), *extra])


@pytest.mark.parametrize("family, providers", [
    ("topk", {"slam_bench", "slam_bench_checked", "dense"}),
    ("fused_linear", {"slam_bench", "slam_bench_checked", "unfused", "dense"})])
def test_profile_family_writes_its_rows(tmp_path, monkeypatch, capsys, family, providers):
    tiny_cpu_sweep(monkeypatch)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    # --check-targets: the fused family's memory claim holds on its tiny memory rows.
    assert cli.main(_args(tmp_path, "--family", family, "--check-targets")) == 0
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}-{family}.csv")  # the full sweep's CSV is not touched
    assert list(df.columns) == report.COLUMNS and set(df["family"]) == {family}
    ok = df[df["status"] == "ok"]
    assert set(ok["provider"]) == providers and set(ok["mode"]) == {"fwd", "full"}
    assert (ok["ms_median"] > 0).all() and (ok["peak_extra_bytes"] > 0).all()
    assert (ok["provider_bytes"] >= ok["floor_bytes"]).all() and (ok["floor_bytes"] > 0).all()
    assert (ok["frac_copy_bw_floor"] > 0).all() and ok["params"].str.contains("K=").all()
    if family == "fused_linear":
        assert (ok["tflops"] > 0).all() and ok["params"].str.contains("H=").all()
        assert "peak (profiler) / bound" in capsys.readouterr().out
    else:
        assert ok["tflops"].isna().all()  # memory-bound: no FLOP rate
    assert "Liger-Kernel needs a CUDA GPU" in set(df.loc[df["status"] == "skipped", "note"])
    assert (tmp_path / f"{stem}-{family}.png").stat().st_size > 0


def test_profile_rejects_an_unknown_family(tmp_path, capsys):
    assert cli.main(_args(tmp_path, "--family", "nope")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--family must be one of loss, topk, fused_linear" in err[0]


def test_rows_credit_each_provider_with_what_it_moves():
    p = topk_family.make_problem("topk", 8, 100, "bf16", "cpu", "peaked", k_ids=16)
    teacher = 8 * 16 * (8 + 2)  # int64 ids, bf16 probabilities
    assert topk_family.floor_bytes(p, "full") == 8 * 100 * 2 * 2 + teacher + 8 * 4
    assert topk_family.provider_bytes("dense", p, "fwd") == 8 * 100 * 2 * 2 + 8 * 4
    assert topk_family.provider_bytes("liger", p, "full") == 8 * 100 * 2 * 2 + 8 * 8
    f = fused_linear_family.make_problem("fused_linear", 8, 100, "fp32", "cpu", "peaked", h=4,
                                         k_ids=16)
    io = (8 * 4 + 100 * 4) * 4
    assert fused_linear_family.floor_bytes(f, "full") == 2 * io + 8 * 16 * (8 + 4) + 8 * 4
    assert fused_linear_family.provider_bytes("dense", f, "fwd") == io + 8 * 100 * 4 + 8 * 4
    assert fused_linear_family.flops(f, "full") == 3 * fused_linear_family.flops(f, "fwd") \
        == 3 * 2 * 8 * 100 * 4


def _mem_row(provider, method, peak, n=4096, v=65536, bound=100 << 20):
    return dict(provider=provider, method=method, peak_bytes=peak, N=n, V=v, bound_bytes=bound)


def test_memory_checks_pass_fail_and_missing():
    nv4 = 4096 * 65536 * 4
    growth = dict(n=4096, n_small=1024, peak=90 << 20, peak_small=85 << 20,
                  allowed_growth=10 << 20)
    good = [_mem_row("slam_bench", "profiler", 80 << 20), _mem_row("dense", "profiler", 2 * nv4)]
    assert [c["result"] for c in fused_linear_memory.memory_checks(good, growth)] == ["PASS"] * 4
    # Above its bound and above the dense path's peak, which cannot have seen the logits.
    bad = [_mem_row("slam_bench", "profiler", 120 << 20), _mem_row("dense", "profiler", 100 << 20)]
    grew = dict(growth, peak=growth["peak_small"] + (11 << 20))
    assert [c["result"] for c in fused_linear_memory.memory_checks(bad, grew)] == ["FAIL"] * 4
    assert [c["result"] for c in fused_linear_memory.memory_checks([], None)] == ["MISSING"] * 4


def _sweep_row(kernel, provider, ms, v=128256, peak=0, frac=0.6, n=4096, dtype="bf16",
               params="K=64 k=5 H=4096 chunk=128 alpha=0.6-1.0"):
    return dict(kernel=kernel, provider=provider, mode="full", dtype=dtype, N=n, C=v,
                params=params, status="ok", ms_median=ms, frac_copy_bw_floor=frac,
                peak_extra_bytes=peak)


def test_gpu_goals_pass_fail_and_missing():
    def goals(rows):
        df = pd.DataFrame(rows)
        return [c["result"] for c in topk_checks.gpu_goals(df) + fused_linear_checks.gpu_goals(df)]

    rows = [_sweep_row("topk", "slam_bench", 1.0), _sweep_row("topk", "dense", 1.5),
            _sweep_row("fused_linear", "slam_bench", 10.0, peak=300 << 20),
            _sweep_row("fused_linear", "unfused", 9.0), _sweep_row("fused_linear", "liger", 8.0)]
    assert goals(rows) == ["PASS"] * 5
    rows = [_sweep_row("topk", "slam_bench", 1.0, frac=0.3), _sweep_row("topk", "dense", 1.1),
            _sweep_row("fused_linear", "slam_bench", 20.0, peak=16 << 30),
            _sweep_row("fused_linear", "unfused", 9.0), _sweep_row("fused_linear", "liger", 8.0)]
    assert goals(rows) == ["FAIL"] * 5
    assert goals(rows[:1])[1:] == ["MISSING"] * 4


def test_cpu_memory_targets_read_the_memory_rows():
    n, v = TINY_MEMORY["n"], TINY_MEMORY["v"]
    params = f"K=64 k=5 H={TINY_MEMORY['h']} chunk={TINY_MEMORY['chunk']} alpha=0.6-1.0"
    bound = fused_linear_memory.bound_bytes(n, v, TINY_MEMORY["h"], 64, TINY_MEMORY["chunk"])

    def targets(fused_peak, small_peak, dense_peak):
        rows = [_sweep_row("fused_linear", "slam_bench", 1.0, v, fused_peak, n=n, dtype="fp32",
                           params=params),
                _sweep_row("fused_linear", "slam_bench", 1.0, v, small_peak, n=n // 4,
                           dtype="fp32", params=params),
                _sweep_row("fused_linear", "dense", 1.0, v, dense_peak, n=n, dtype="fp32",
                           params=params)]
        sizes = {"cpu-quick": TINY_MEMORY}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fused_linear_memory, "MEMORY_SIZES", sizes)
            return [c["result"] for c in fused_linear_checks.cpu_targets(pd.DataFrame(rows))]

    assert targets(n * v, n * v, 3 * n * v * 4) == ["PASS"] * 4
    # Above the bound; a dense peak the probe cannot have seen (and below the fused one);
    # growth by more than the per-row allowance (an N x V fp32 buffer, 4 times over).
    assert targets(bound + 1, bound + 1 - 4 * n * v * 4, n * v) == ["FAIL"] * 4
