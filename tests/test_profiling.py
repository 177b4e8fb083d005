"""Profiling tooling (no timing asserted here) and the torch backend's fast paths.

- `python -m slam_bench.gpu_check --dry-run` runs end to end on CPU and writes its files; it
  validates --out first, stops when the Triton kernels cannot run, and its sweep asks for
  backend="triton" (a kernel failure is a failed row, never a torch-backend row).
- `slam-bench profile` writes the CSV and plot named after the device, prints results without
  the profiler's chatter, and --check-targets fails when the targets are not met by the rows.
- Rows state the provider's bytes and the floor; each provider runs on its own inputs;
  torch.compile is static per configuration; families plug in by registration.
- The target/goal checks read CSV rows correctly (synthetic rows, known answers).
- The peak-memory probe sees a known allocation.
- The torch backend's gathered top-k path, its dense-tie fallback, its chunk workers and its
  backward shortcut agree with the float64 reference formula.
"""
from __future__ import annotations

import argparse
import os
from unittest import mock

import pandas as pd
import pytest
import torch

from slam_bench import chunks, distill_loss, slam_loss
from slam_bench.cli import profile as cli
from slam_bench.profiling import (families, loss_checks, loss_device_checks, loss_family, report,
                                  sweep, timing)
from slam_bench.reference import distill_loss_reference, slam_loss_reference
from profiling_fixtures import tiny_cpu_sweep

needs_interpreter = pytest.mark.skipif(
    torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="the dry run needs Triton's interpreter, which is off on a GPU machine")

# ---------------------------------------------------------------- gpu_check and the CLI


@needs_interpreter
def test_gpu_check_dry_run_writes_csv_plot_and_summary(tmp_path, capfd):
    from slam_bench import gpu_check

    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out, err = capfd.readouterr()
    assert "USDT" not in out + err and "STAGE:" not in out + err
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}.csv")
    assert list(df.columns) == report.COLUMNS
    ours = df[df["provider"].str.startswith("slam_bench") & (df["status"] == "ok")]
    # The fused kernels ran (interpreter) in both modes for every family's kernels, asked for
    # by name.
    assert {(k, m) for k, m in zip(ours["kernel"], ours["mode"])} == {
        (k, m) for k in ("slam", "distill", "topk", "fused_linear") for m in ("fwd", "full")}
    assert (ours["backend"] == "triton").all()
    assert set(df["family"]) == {"loss", "topk", "fused_linear"}
    assert (ours["ms_median"] > 0).all() and (ours["gbps_floor"] > 0).all()
    assert (df.loc[df["status"] == "ok", "floor_bytes"] > 0).all()
    skipped = df[df["status"] == "skipped"]
    assert "Liger-Kernel needs a CUDA GPU" in set(skipped["note"])
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    corr = pd.read_csv(tmp_path / "correctness.csv")
    assert set(corr["dtype"]) == {"fp32", "bf16", "fp16"}
    assert {"per-row k", "k = C", "overwrite_logits"} <= set(corr["case"].dropna())
    assert set(corr["family"]) == {"loss", "topk", "fused_linear"}
    assert (corr["result"] == "PASS").all(), corr.to_string()
    # The default (fused) checks raise the torch backend's errors through backend="triton",
    # on chip and streamed, for both losses; compile mode traces and matches eager.
    cases = set(corr["case"].dropna())
    for label, _ in loss_device_checks.BAD_VALUES:
        assert f"fused checks: {label}" in cases
    fused = corr[corr["case"].fillna("").str.startswith("fused checks")]
    assert set(fused["kernel"]) == {"slam", "distill"} and set(fused["C"]) == {13, 37}
    assert {"compile (aot_eager): fullgraph model step, check_values=False: loss and gradients "
            "vs eager", "compile (aot_eager): default checks, fullgraph: loss, gradient and error vs "
            "eager",
            "compile (aot_eager): 4 new batches of 2 sizes: at most 2 compiles, loss vs eager"
            } <= cases
    # Split rows (as a 4-SM device would split them, small blocks) match the reference, and
    # the split launch ran (a case that was not split fails).
    assert {"split rows", "split rows, per-row k"} <= cases
    assert "known gap: under torch.compile" in out
    # Compile mode is timed as a provider beside the plain call (aot_eager on CPU).
    comp = ours[ours["provider"] == "slam_bench_compile"]
    assert len(comp) == 1 and comp["mode"].tolist() == ["full"]
    unsplit = ours[ours["provider"] == "slam_bench_unsplit"]
    assert len(unsplit) == 1 and unsplit["N"].tolist() == comp["N"].tolist()
    plain = ours[(ours["provider"] == "slam_bench") & (ours["N"] == comp["N"].iloc[0])
                 & (ours["C"] == comp["C"].iloc[0]) & (ours["mode"] == "full")]
    assert len(plain) == 1 and plain["kernel"].tolist() == ["slam"]
    # The summary is the last thing printed, one line per goal, each with its value.
    summary = out[out.rindex("SUMMARY"):]
    for goal in ("kernels vs float64 reference", "rows on chip", "streamed rows",
                 "speed-up over eager", "speed-up over compile", "no cliff", "peak extra memory",
                 "default (fused) checks' time", "split rows' speed-up"):
        assert goal in summary
    # 1 correctness line, 8 goals of the loss family, 2 of topk, 3 of fused_linear.
    assert summary.count("PASS") + summary.count("FAIL") + summary.count("MISSING") == 14


def test_gpu_check_without_gpu_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from slam_bench import gpu_check

    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err


def _file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    return f


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_gpu_check_rejects_a_bad_out_before_any_work(tmp_path, capsys, where):
    from slam_bench import gpu_check

    out = _file(tmp_path) if where == "file" else _file(tmp_path) / "sub"
    boom = mock.MagicMock(side_effect=AssertionError("measured before checking --out"))
    with mock.patch.object(gpu_check, "_kernel_check", boom):
        assert gpu_check.main(["--dry-run", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "is a file" in err[0]
    assert not boom.called


def test_gpu_check_names_missing_packages_before_any_work(tmp_path, capsys, monkeypatch):
    from slam_bench import gpu_check

    real = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pandas" else real(name, *a))
    with mock.patch.object(gpu_check, "_kernel_check") as check:
        assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 2
    assert not check.called
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not importable here: pandas" in err[0]


def test_gpu_check_stops_when_the_kernels_cannot_run(tmp_path, capsys):
    from slam_bench import gpu_check

    broken = mock.MagicMock(side_effect=ImportError("No module named 'triton'"))
    with mock.patch.object(gpu_check, "_kernel_check", broken), \
            mock.patch.object(gpu_check, "_run") as run:
        assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 1
    assert not run.called  # nothing measured, with any backend
    err = capsys.readouterr().err
    assert "No module named 'triton'" in err and "stopping" in err
    assert list(tmp_path.iterdir()) == []


@needs_interpreter
def test_gpu_check_stops_when_any_familys_kernels_fail(tmp_path, capsys, monkeypatch):
    """Every registered family's smoke call runs before any measurement (here the loss
    family's passes under the interpreter and the top-K one fails)."""
    import dataclasses

    from slam_bench import gpu_check

    broken = mock.MagicMock(side_effect=RuntimeError("topk kernel does not compile"))
    monkeypatch.setitem(families.FAMILIES, "topk",
                        dataclasses.replace(families.FAMILIES["topk"], smoke=broken))
    with mock.patch.object(gpu_check, "_run") as run:
        assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 1
    assert broken.called and not run.called
    assert "topk kernel does not compile" in capsys.readouterr().err


@pytest.mark.parametrize("kernel, other", [("slam", "eager"), ("topk", None),
                                           ("fused_linear", None)])
def test_sweep_never_falls_back_to_the_torch_backend(monkeypatch, kernel, other):
    """Asked for backend="triton" where the kernels cannot run, this library's rows fail
    with the reason; no row measures the torch backend under the kernel's name."""
    import slam_bench.functional as functional

    monkeypatch.setattr(functional, "_triton_usable", lambda device: False)
    ours = ("slam_bench", "slam_bench_checked")
    cfg = families.Config(kernel, "peaked", "fp32", 8, 10, ("full",),
                          ours + ((other,) if other else ()))
    rows = sweep.run_sweep([cfg], torch.device("cpu"), float("nan"), name="t", backend="triton",
                           warmup=0, reps=1, log=lambda _: None)
    by = {r["provider"]: r for r in rows}
    for prov in ours:
        assert by[prov]["status"] == "skipped"
        assert "backend='triton' needs CUDA" in by[prov]["note"]
    if other:
        assert by[other]["status"] == "ok"


def _profile_args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--quick", "--out", str(tmp_path), *extra])


def test_profile_cli_writes_device_csv_and_plot(tmp_path, monkeypatch, capfd):
    tiny_cpu_sweep(monkeypatch)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    assert cli.main(_profile_args(tmp_path)) == 0
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}.csv")
    assert list(df.columns) == report.COLUMNS
    ok = df[df["status"] == "ok"]
    # Every registered family, one CSV; the loss family's rows as before.
    assert set(ok["family"]) == {"loss", "topk", "fused_linear"}
    loss = ok[ok["family"] == "loss"]
    assert set(loss["provider"]) == {"slam_bench", "slam_bench_checked", "eager", "torch_ce"}
    assert set(loss["C"]) == {10, 30} and (ok["copy_bw_gbps"] > 0).all()
    assert (df["sweep"] == "cpu-quick").all() and df["git_sha"].notna().all()
    # Every row carries the load it was timed under and its provider's spread.
    assert (ok["load_avg_1m"] >= 0).all() and (ok["cores"] >= 1).all()
    assert ((ok["spread"] - (ok["ms_p80"] - ok["ms_p20"]) / ok["ms_median"]).abs() < 1e-9).all()
    # Providers that cannot run here are recorded and printed, with the reason.
    notes = set(df.loc[df["status"] == "skipped", "note"])
    assert "Liger-Kernel needs a CUDA GPU" in notes
    out, err = capfd.readouterr()
    assert "skipped liger: Liger-Kernel needs a CUDA GPU" in out
    assert "USDT" not in out + err  # results, not the profiler's chatter
    assert "slam_loss (default checks) fwd+bwd vs the eager formula" in out
    assert (tmp_path / f"{stem}.png").stat().st_size > 0


def test_profile_warns_when_the_machine_is_busy(tmp_path, monkeypatch, capfd):
    """Load above the cores: a warning while timing, and one under the table of results."""
    tiny_cpu_sweep(monkeypatch)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    assert cli.main(_profile_args(tmp_path, "--family", "loss")) == 0
    out, _ = capfd.readouterr()
    assert "the machine is busy" in out
    assert "warning: the machine was busy for" in out and "load average up to 64.00" in out
    stem = report.file_stem(report.device_name(torch.device("cpu")))
    df = pd.read_csv(tmp_path / f"{stem}-loss.csv")
    assert (df.loc[df["status"] == "ok", "load_avg_1m"] == 64.0).all()
    # A quiet machine: no warning.
    quiet = df.assign(load_avg_1m=0.0)
    assert report.busy_warning(quiet) is None and "warning" not in report.format_table(quiet)


def test_profile_check_targets_fails_without_target_rows(tmp_path, monkeypatch):
    tiny_cpu_sweep(monkeypatch)
    monkeypatch.setitem(cli.COPY_PROBE_BYTES, "cpu", 1 << 20)
    threads = torch.get_num_threads()
    try:
        # The tiny sweep has no N = 8192, C = 1000 rows: the targets are MISSING, so it fails.
        assert cli.main(_profile_args(tmp_path, "--check-targets", "--family", "loss")) == 1
        assert torch.get_num_threads() == 2  # the count the CPU targets are stated at
    finally:
        torch.set_num_threads(threads)


def test_profile_rejects_a_bad_out_before_any_work(tmp_path, monkeypatch, capsys):
    boom = mock.MagicMock(side_effect=AssertionError("measured before checking --out"))
    monkeypatch.setattr(timing, "copy_bandwidth_gbps", boom)
    assert cli.main(_profile_args(_file(tmp_path))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slam-bench profile: --out")
    assert not boom.called


def test_profile_threads_must_be_positive(capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--threads", "0"])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err


# ---------------------------------------------------------------- bytes, inputs, compile, families


def test_rows_credit_each_provider_with_what_it_moves():
    p = loss_family.make_problem("distill_onehot", 16, 100, "bf16", "cpu", "peaked")
    nc = 16 * 100
    assert loss_family.provider_bytes("slam_bench", p, "full") == nc * 2 * 3
    assert loss_family.provider_bytes("torch_ce", p, "full") == nc * 2 * 2 + 16 * 8
    assert loss_family.floor_bytes(p, "full") == nc * 2 * 2 + 16 * 8  # labels, not N x C
    s = loss_family.make_problem("slam", 16, 100, "bf16", "cpu", "peaked")
    assert loss_family.floor_bytes(s, "fwd") == nc * 2 * 2 + 16 * 4  # z, y and alpha
    assert loss_family.provider_bytes("eager", s, "full") == nc * 2 * 3 + 16 * 4


def test_each_provider_runs_on_its_own_inputs():
    p = loss_family.make_problem("slam", 8, 10, "fp32", "cpu", "peaked")
    z0 = p.data["z"].clone()
    step, own = sweep.build(loss_family.FAMILY, "eager", p, "full")
    step()
    assert own.data["z"].data_ptr() != p.data["z"].data_ptr()
    assert own.data["z"].grad is not None and p.data["z"].grad is None
    with torch.no_grad():
        own.data["z"].mul_(0)  # a provider writing into its inputs (as Liger does)
    assert torch.equal(p.data["z"], z0)


def test_compile_is_static_and_fresh_per_configuration(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    for c in (10, 20):
        p = loss_family.make_problem("slam", 4, c, "fp32", "cpu", "peaked")
        loss_family.loss_fn("compile", p)
    assert calls == [{"dynamic": False}, {"dynamic": False}]


def test_compile_mode_provider_is_one_static_graph(monkeypatch):
    """slam_bench_compile: torch.compile(fullgraph=True) of this library's loss, static and
    afresh per configuration, aot_eager on CPU; the GPU check times it at C = 32000."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    for kernel in ("slam", "distill"):
        p = loss_family.make_problem(kernel, 4, 10, "fp32", "cpu", "peaked")
        loss = loss_family.loss_fn("slam_bench_compile", p)(p)
        ref = loss_family.loss_fn("slam_bench", p)(p)
        torch.testing.assert_close(loss, ref)
    assert calls == [dict(dynamic=False, fullgraph=True, backend="aot_eager")] * 2
    goal = {(c.n, c.c): c.providers for c in loss_family.goal_configs()}
    assert "slam_bench_compile" in goal[(4096, 32000)]
    assert "slam_bench_compile" not in loss_family.PROVIDERS  # the CPU sweeps do not time it


def test_families_plug_in_by_registration():
    fam = families.KernelFamily(
        name="toy", kernels=("toy",), providers=("p",), make_problem=None, loss_fn=None,
        provider_bytes=None, floor_bytes=None)
    try:
        families.register_family(fam)
        assert families.family_of("toy") is fam
        with pytest.raises(ValueError, match="already belong to family 'toy'"):
            families.register_family(families.KernelFamily(
                name="other", kernels=("toy",), providers=(), make_problem=None,
                loss_fn=None, provider_bytes=None, floor_bytes=None))
    finally:
        families.FAMILIES.pop("toy", None)
    with pytest.raises(ValueError, match="kernel must be one of"):
        families.family_of("toy")


# ---------------------------------------------------------------- checks on CSV rows


def _row(kernel, provider, ms, n=8192, c=1000, dtype="fp32", peak=0, gbps=1.0, frac=0.5,
         teacher="peaked"):
    return dict(kernel=kernel, provider=provider, mode="full", dtype=dtype, N=n, C=c,
                teacher=teacher, status="ok", ms_median=ms, peak_extra_bytes=peak,
                gbps_floor=gbps, frac_copy_bw_floor=frac, threads=2)


def test_cpu_targets_pass_fail_and_missing():
    buf = 8192 * 1000 * 4
    good = pd.DataFrame([_row("slam", "slam_bench", 10, peak=buf), _row("slam", "eager", 36),
                         _row("slam", "slam_bench_checked", 11.5),
                         _row("distill", "slam_bench", 5), _row("distill", "torch_ce", 6.5)])
    assert [c["result"] for c in loss_checks.cpu_targets(good)] == ["PASS"] * 4
    # 3.4x without checks (needs 3.5x), 2.96x with (needs 3x), 3 buffers, 1.09x CE (needs 1.2x).
    bad = pd.DataFrame([_row("slam", "slam_bench", 10, peak=3 * buf), _row("slam", "eager", 34),
                        _row("slam", "slam_bench_checked", 11.5),
                        _row("distill", "slam_bench", 5.5), _row("distill", "torch_ce", 6)])
    assert [c["result"] for c in loss_checks.cpu_targets(bad)] == ["FAIL"] * 4
    assert [c["result"] for c in loss_checks.cpu_targets(good.iloc[:0])] == ["MISSING"] * 4


def test_gpu_goals_detect_a_cliff_and_slow_rows():
    cs = (1000, 8192, 32000, 128256, 262144)
    fine = [_row("slam", "slam_bench", 1.0, n=2048, c=c, dtype="bf16", gbps=4000,
                 frac=0.9 if c <= 8192 else 0.6, peak=2048 * c * 2) for c in cs]
    others = [_row("slam", p, ms, n=2048, c=c, dtype="bf16") for c in cs
              for p, ms in (("eager", 4.0), ("compile", 2.0))]
    goals = loss_checks.gpu_goals(pd.DataFrame(fine + others))
    # No checked rows, no unsplit rows: those two goals are MISSING, never PASS.
    assert [g["result"] for g in goals] == ["PASS"] * 5 + ["MISSING", "MISSING", "PASS"]
    # Split rows beside one program per row at N = 8 and 64, C = 128,256: faster passes,
    # slower fails, one N missing is MISSING.
    def split_rows(split_ms, n_values=(8, 64)):
        return [_row("slam", prov, ms, n=n, c=128256, dtype="bf16")
                for n in n_values for prov, ms in (("slam_bench", split_ms), ("slam_bench_unsplit", 1.0))]

    def split_goal(rows):
        out = {g["goal"]: g["result"] for g in loss_checks.gpu_goals(pd.DataFrame(fine + others + rows))}
        return out[next(k for k in out if "split rows' speed-up" in k)]
    assert split_goal(split_rows(0.5)) == "PASS"
    assert split_goal(split_rows(1.5)) == "FAIL"
    assert split_goal(split_rows(0.5, n_values=(8,))) == "MISSING"
    cliff = [dict(r, gbps_floor=r["gbps_floor"] / 3, frac_copy_bw_floor=0.3)
             if r["C"] == 262144 else r for r in fine]
    goals = {g["goal"]: g["result"] for g in loss_checks.gpu_goals(pd.DataFrame(cliff + others))}
    assert goals[next(k for k in goals if "no cliff" in k)] == "FAIL"
    assert goals[next(k for k in goals if "streamed rows" in k)] == "FAIL"
    assert goals[next(k for k in goals if "rows on chip" in k)] == "PASS"


def test_gpu_goal_for_the_fused_checks_overhead():
    """The checked provider beside the unchecked one at C = 32000, N = 4096 and 8192: the
    worst ratio against GPU_MAX_CHECKED_RATIO; MISSING unless every N was measured."""
    def rows(checked_ms):
        return [_row("slam", p, ms, n=n, c=32000, dtype="bf16") for n in (4096, 8192)
                for p, ms in (("slam_bench", 1.0), ("slam_bench_checked", checked_ms))]

    def result(df):
        goals = {g["goal"]: g for g in loss_checks.gpu_goals(df)}
        return goals[next(k for k in goals if "default (fused) checks" in k)]

    ok = result(pd.DataFrame(rows(1.1)))
    assert ok["result"] == "PASS" and ok["value"] == pytest.approx(1.1)
    assert result(pd.DataFrame(rows(1.2)))["result"] == "FAIL"
    assert result(pd.DataFrame(rows(1.1)[:2]))["result"] == "MISSING"
    # The GPU check measures those rows among the goal rows, both providers side by side.
    goal = {(c.n, c.c): c.providers for c in loss_family.goal_configs()}
    for n in (4096, 8192):
        assert {"slam_bench", "slam_bench_checked"} <= set(goal[(n, 32000)])


def test_file_stem():
    assert report.file_stem("NVIDIA H200 (SXM) / 141GB") == "NVIDIA_H200_SXM_141GB"


def test_peak_probe_sees_a_known_allocation_and_keeps_stderr_clean(capfd):
    n = 1 << 20

    def alloc():
        t = torch.empty(n, dtype=torch.float32)
        t.fill_(1.0)
        return t

    peak = timing.peak_extra_bytes_cpu(alloc)
    assert 4 * n <= peak < 4 * n + (64 << 10)
    out, err = capfd.readouterr()
    assert "USDT" not in out + err and "STAGE:" not in out + err


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


def test_cpu_timer_interleaves_and_times_each_call_after_one_of_its_own():
    """Rounds rotate the providers; every timed call comes right after an untimed call of
    the same provider (each is timed in the state its own step leaves, not another's)."""
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "ABC"}
    out = timing.time_cpu_round_robin(fns, warmup=1, reps=3)
    assert {k: len(v) for k, v in out.items()} == {"A": 3, "B": 3, "C": 3}
    rounds = calls[3:]  # after one warm-up call each
    assert rounds == ["A", "A", "B", "B", "C", "C", "B", "B", "C", "C", "A", "A",
                      "C", "C", "A", "A", "B", "B"]


_STEADY_STATE_PROBE = """
import resource, torch
from slam_bench.profiling import timing

def step():
    bufs = [torch.empty(4 << 20).fill_(1.0) for _ in range(4)]  # 16 MiB each, touched
    del bufs

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

with timing.allocator_steady_state() as kept:
    # The heap settles within a few steps: once, at the second or third step, it grows by
    # one buffer (4096 faults), sometimes after a step that faulted nothing. Warm up until
    # three steps in a row fault nothing. Without the steady state every step faults about
    # 16,000 pages, so the warm-up never ends.
    quiet = 0
    for warm in range(20):
        before = faults()
        step()
        quiet = quiet + 1 if faults() == before else 0
        if quiet == 3:
            break
    before = faults()
    for _ in range(3):
        step()
    after = faults()
print(kept, warm, after - before)
"""


def test_allocator_steady_state_reuses_freed_memory_without_page_faults():
    """Under timing.allocator_steady_state a step that frees and reallocates large buffers
    (here 4 x 16 MiB, as the eager formula does) page-faults none of them in again. In a
    fresh process: the page-fault count is process-wide, and a test worker's heap (what
    earlier tests left in it, other threads' faults) would decide the number otherwise."""
    import platform
    import subprocess
    import sys
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _STEADY_STATE_PROBE], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    kept, warm, faults = out.stdout.split()[-3:]
    assert kept == "True"
    assert int(warm) < 19, "no three steps in a row without page faults in 20 warm-up steps"
    assert int(faults) < 100, f"{faults} page faults (a 16 MiB buffer is 4096 pages)"
