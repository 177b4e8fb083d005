"""Profiling tooling (no timing asserted here) and the torch backend's fast paths.

- `python -m slam_bench.gpu_check --dry-run` runs end to end on CPU and writes its files.
- `slam-bench profile` writes the CSV and plot named after the device; --check-targets fails
  when the targets are not met by the rows.
- The target/goal checks read CSV rows correctly (synthetic rows, known answers).
- The peak-memory probe sees a known allocation.
- The torch backend's gathered top-k path, its dense-tie fallback, its chunk workers and its
  backward shortcut agree with the float64 reference formula.
"""
from __future__ import annotations

import argparse
import os

import pandas as pd
import pytest
import torch

import slam_bench.torch_backend as tb
from slam_bench import chunks
from slam_bench import distill_loss, slam_loss
from slam_bench.cli import profile as cli
from slam_bench.profiling import report, sweep, timing
from slam_bench.reference import distill_loss_reference, slam_loss_reference

# ---------------------------------------------------------------- gpu_check and the CLI


@pytest.mark.skipif(torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the dry run needs Triton's interpreter, which is off on a GPU machine")
def test_gpu_check_dry_run_writes_csv_plot_and_summary(tmp_path, capsys):
    from slam_bench import gpu_check

    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}.csv")
    assert list(df.columns) == report.COLUMNS
    ours = df[(df["provider"] == "slam_bench") & (df["status"] == "ok")]
    # The fused kernel ran (interpreter) in both modes for both kernels.
    assert {(k, m) for k, m in zip(ours["kernel"], ours["mode"])} == {
        ("slam", "fwd"), ("slam", "full"), ("distill", "fwd"), ("distill", "full")}
    assert (ours["ms_median"] > 0).all() and (ours["gbps"] > 0).all()
    skipped = df[df["status"] == "skipped"]
    assert "Liger-Kernel needs a CUDA GPU" in set(skipped["note"])
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    corr = pd.read_csv(tmp_path / "correctness.csv")
    assert set(corr["dtype"]) == {"fp32", "bf16", "fp16"}
    assert (corr["result"] == "PASS").all(), corr.to_string()
    # The summary is the last thing printed, one line per goal.
    summary = out[out.rindex("SUMMARY"):]
    for goal in ("kernel vs float64 reference", "fraction of copy bandwidth",
                 "speed-up over eager", "speed-up over compile", "no cliff",
                 "peak extra memory"):
        assert goal in summary
    assert summary.count("PASS") + summary.count("FAIL") + summary.count("MISSING") == 6


def test_gpu_check_without_gpu_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from slam_bench import gpu_check

    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err


TINY = sweep.SweepSpec(
    name="test-tiny", kernels=("slam", "distill"), dtypes=("fp32",), teachers=("peaked",),
    c_values=(10, 30), n_fixed=8, n_values=(), c_for_n_sweep=30, warmup=0, reps=1,
    compile_only=())


def _profile_args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--quick", "--out", str(tmp_path), *extra])


def test_profile_cli_writes_device_csv_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "CPU_QUICK", TINY)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    assert cli.main(_profile_args(tmp_path)) == 0
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}.csv")
    ok = df[df["status"] == "ok"]
    assert set(ok["provider"]) == {"slam_bench", "eager", "torch_ce"}
    assert set(ok["C"]) == {10, 30} and (ok["copy_bw_gbps"] > 0).all()
    assert (df["sweep"] == "test-tiny").all() and df["git_sha"].notna().all()
    # Providers that cannot run here are recorded and printed, with the reason.
    notes = set(df.loc[df["status"] == "skipped", "note"])
    assert "Liger-Kernel needs a CUDA GPU" in notes
    assert "skipped liger: Liger-Kernel needs a CUDA GPU" in capsys.readouterr().out
    assert (tmp_path / f"{stem}.png").stat().st_size > 0


def test_profile_check_targets_fails_without_target_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "CPU_QUICK", TINY)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    # The tiny sweep has no N = 8192, C = 1000 rows: the targets are MISSING, so it fails.
    assert cli.main(_profile_args(tmp_path, "--check-targets")) == 1


# ---------------------------------------------------------------- checks on CSV rows


def _row(kernel, provider, ms, n=8192, c=1000, dtype="fp32", peak=0, gbps=1.0, frac=0.5,
         teacher="peaked"):
    return dict(kernel=kernel, provider=provider, mode="full", dtype=dtype, N=n, C=c,
                teacher=teacher, status="ok", ms_median=ms, peak_extra_bytes=peak, gbps=gbps,
                frac_copy_bw=frac)


def test_cpu_targets_pass_fail_and_missing():
    buf = 8192 * 1000 * 4
    good = pd.DataFrame([_row("slam", "slam_bench", 10, peak=buf), _row("slam", "eager", 25),
                         _row("distill", "slam_bench", 5), _row("distill", "torch_ce", 6)])
    assert [c["result"] for c in report.cpu_targets(good)] == ["PASS"] * 3
    bad = pd.DataFrame([_row("slam", "slam_bench", 10, peak=3 * buf), _row("slam", "eager", 15),
                        _row("distill", "slam_bench", 7), _row("distill", "torch_ce", 6)])
    assert [c["result"] for c in report.cpu_targets(bad)] == ["FAIL"] * 3
    assert [c["result"] for c in report.cpu_targets(good.iloc[:0])] == ["MISSING"] * 3


def test_gpu_goals_detect_a_cliff_and_slow_rows():
    cs = (1000, 32000, 128256, 262144)
    fine = [_row("slam", "slam_bench", 1.0, n=2048, c=c, dtype="bf16", gbps=4000, frac=0.9,
                 peak=2048 * c * 2) for c in cs]
    others = [_row("slam", p, ms, n=2048, c=c, dtype="bf16") for c in cs
              for p, ms in (("eager", 4.0), ("compile", 2.0))]
    goals = report.gpu_goals(pd.DataFrame(fine + others))
    assert [g["result"] for g in goals] == ["PASS"] * 5
    cliff = [dict(r, gbps=r["gbps"] / 3, frac_copy_bw=0.3) if r["C"] == 262144 else r for r in fine]
    goals = {g["goal"]: g["result"] for g in report.gpu_goals(pd.DataFrame(cliff + others))}
    assert goals[next(k for k in goals if "no cliff" in k)] == "FAIL"
    assert goals[next(k for k in goals if "copy bandwidth" in k)] == "FAIL"


def test_model_bytes_and_file_stem():
    assert sweep.model_bytes("full", 10, 100, "bf16") == 10 * 100 * 6
    assert sweep.model_bytes("fwd", 10, 100, "fp32") == 10 * 100 * 8
    assert report.file_stem("NVIDIA H200 (SXM) / 141GB") == "NVIDIA_H200_SXM_141GB"


def test_peak_probe_sees_a_known_allocation():
    n = 1 << 20

    def alloc():
        t = torch.empty(n, dtype=torch.float32)
        t.fill_(1.0)
        return t

    peak = timing.peak_extra_bytes_cpu(alloc)
    assert 4 * n <= peak < 4 * n + (64 << 10)


# ---------------------------------------------------------------- torch backend fast paths


def _compare(z, y, alpha, k, grad_out=None, **kw):
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    out = slam_loss(z1, y, alpha, k, backend="torch", **kw)
    ref = slam_loss_reference(z2, y, alpha, k, **kw)
    g = torch.ones_like(ref) if grad_out is None else grad_out
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)


def _inputs(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    y = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, dim=1)
    return z, y


def test_gathered_path_per_row_alpha_k_weight_temperature():
    z, y = _inputs(40, 30)
    alpha = torch.linspace(0.3, 1.0, 40, dtype=torch.float64)  # includes alpha = 1 rows
    k = torch.randint(1, 8, (40,), generator=torch.Generator().manual_seed(1))
    w = torch.rand(40, dtype=torch.float64) * (torch.arange(40) % 3 != 0)
    _compare(z, y, alpha, k, weight=w, temperature=1.7)
    _compare(z, y, alpha, k.clamp(min=2), normalize=True, reduction="none",
             grad_out=torch.rand(40, dtype=torch.float64))


def test_ties_past_k_take_the_dense_fallback():
    z, _ = _inputs(12, 20)
    y = torch.zeros(12, 20, dtype=torch.float64)
    y[:, :3] = 0.25  # a three-way tie at the top: k = 2 must mix all three
    y[:, 3:8] = 0.05
    y[::2, 8:] = 0.0
    _compare(z, y, 0.7, 2)
    _compare(z, y, 0.7, 6)  # tie among the 0.05 entries past k = 6
    _compare(z, y, 0.7, 20)  # k = C


def test_chunk_workers_match_the_serial_path(monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 64)  # many chunks of a few rows
    z, y = _inputs(50, 16)
    alpha = torch.full((50,), 0.8, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _compare(z, y, alpha, 3, weight=torch.rand(50, dtype=torch.float64), reduction="sum")
        assert torch.get_num_threads() == 2  # the workers' single-thread setting is undone
    finally:
        torch.set_num_threads(threads)


def test_backward_shortcut_is_safe_with_retained_graph_and_scaled_grad():
    z, y = _inputs(6, 9)
    z1 = z.clone().requires_grad_(True)
    loss = distill_loss(z1, y, backend="torch")
    loss.backward(retain_graph=True)
    first = z1.grad.clone()
    loss.backward(torch.tensor(3.0, dtype=torch.float64))  # reuses the saved gradient
    z2 = z.clone().requires_grad_(True)
    distill_loss_reference(z2, y).backward()
    torch.testing.assert_close(first, z2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z1.grad, 4 * z2.grad, rtol=1e-9, atol=1e-12)
