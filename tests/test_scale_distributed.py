"""Two CPU processes with gloo: sharded teacher inference reassembles the full output, and one
DDP training step with the SLaM loss equals the same step taken by one process on the union
of the two ranks' batches."""
from __future__ import annotations

import sys

import pytest
import torch
from scale_fixtures import free_port, start_ranks

from slam_bench import slam_loss
from slam_bench.distributed import DistContext
from slam_bench.models.text import embedding_bag_text

N, L, VOCAB, C, LR, SEED = 10, 6, 40, 3, 0.5, 1


def _problem():
    """The same data, teacher and student initial weights in every process."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (N, L), generator=g)
    teacher = torch.nn.Linear(L, C)
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(C, L, generator=g))
        teacher.bias.zero_()
    torch.manual_seed(123)
    # No BatchNorm: with it, per-rank batch statistics would differ from the full batch's.
    student = embedding_bag_text((L,), C, vocab_size=VOCAB, embed_dim=8, hidden=8)
    return tokens, teacher, student


def _step(model, tokens, probs, idx):
    logits = model(tokens[idx])
    loss = slam_loss(logits, probs[idx], 0.8, 2)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad


def _worker(rank: int, world: int, port: int, out_dir: str):
    import os
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with DistContext.from_env(device="cpu") as ctx:
        tokens, teacher, student = _problem()
        if rank == 1:  # a different local init: DDP must broadcast rank 0's weights
            with torch.no_grad():
                for p in student.parameters():
                    p.add_(1.0)
        rows = ctx.shard(N)
        with torch.no_grad():
            local = teacher(tokens[rows].float()).softmax(-1)
        probs = ctx.gather_rows(local, N)
        model = ctx.wrap(student)
        # A module only rank 0 trained (the teacher): rank-dependent weights and buffers.
        lone = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        with torch.no_grad():
            lone[0].weight.fill_(float(rank + 1))
            lone[1].running_mean.fill_(float(rank + 3))
        ctx.broadcast_module(lone)
        idx = ctx.epoch_indices(N, epoch=3, seed=SEED)
        _step(model, tokens, probs, idx)
        ctx.barrier()
        torch.save({"probs": probs, "idx": idx, "rows": (rows.start, rows.stop), "is_main": ctx.is_main,
                    "loss_mean": ctx.all_reduce_mean(torch.tensor(float(rank))),
                    "token": ctx.broadcast_object(f"from-{rank}"),
                    "lone": {k: v.clone() for k, v in lone.state_dict().items()},
                    "params": [p.detach().clone() for p in DistContext.unwrap(model).parameters()]},
                   f"{out_dir}/rank{rank}.pt")
        # Free the DDP wrapper while the process group is still registered: were its Reducer
        # the group's last owner at exit, the group would be destroyed with the GIL held and
        # deadlock against gloo's worker threads (pytorch/pytorch#56297; seen under load).
        del model


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="starts the ranks from a fork server (POSIX)")
def test_two_process_gloo_ddp_step_equals_single_process_step(tmp_path):
    start_ranks(_worker, (2, free_port(), str(tmp_path)), 2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    tokens, teacher, student = _problem()
    with torch.no_grad():
        full_probs = teacher(tokens.float()).softmax(-1)
    # Sharded teacher inference: contiguous halves, gathered back in row order on both ranks.
    assert r0["rows"] == (0, 5) and r1["rows"] == (5, 10)
    torch.testing.assert_close(r0["probs"], full_probs)
    torch.testing.assert_close(r1["probs"], full_probs)
    # The ranks' epoch slices partition one permutation of the rows.
    assert sorted(torch.cat([r0["idx"], r1["idx"]]).tolist()) == list(range(N))
    # DDP averages the two ranks' mean-loss gradients = the gradient of the mean over both
    # halves (equal sizes), so one plain SGD step on the union gives the same weights.
    _step(student, tokens, full_probs, torch.cat([r0["idx"], r1["idx"]]))
    for a, b, ref in zip(r0["params"], r1["params"], student.parameters()):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, ref.detach(), rtol=1e-5, atol=1e-6)
    assert r0["is_main"] and not r1["is_main"]
    assert r0["loss_mean"].item() == r1["loss_mean"].item() == 0.5
    assert r0["token"] == r1["token"] == "from-0"
    # broadcast_module gives every rank rank 0's parameters and buffers.
    assert (r1["lone"]["0.weight"] == 1.0).all() and (r1["lone"]["1.running_mean"] == 3.0).all()
    for k in r0["lone"]:
        torch.testing.assert_close(r0["lone"][k], r1["lone"][k], rtol=0, atol=0)


def test_single_process_context_is_a_no_op(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = DistContext.from_env(device="cpu")
    model = torch.nn.Linear(2, 2)
    assert not ctx.distributed and ctx.is_main and ctx.wrap(model) is model
    assert ctx.shard(7) == slice(0, 7)
    x = torch.randn(7, 2)
    assert ctx.gather_rows(x, 7) is x
    # One process: the same permutation the DistributedSampler would give a world of one.
    assert sorted(ctx.epoch_indices(7, 0, 5).tolist()) == list(range(7))
    assert torch.equal(ctx.epoch_indices(7, 2, 5), ctx.epoch_indices(7, 2, 5))


def test_single_context_is_rank_0_of_1_with_identity_collectives():
    ctx = DistContext.single("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, None, torch.device("cpu"))
    assert not ctx.distributed and ctx.is_main
    model = torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]
    assert ctx.wrap(model) is model
    ctx.broadcast_module(model)
    ctx.barrier()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    x = torch.randn(5, 3)
    assert ctx.shard(5) == slice(0, 5) and ctx.gather_rows(x, 5) is x
    assert ctx.broadcast_object({"k": 1}) == {"k": 1}
    assert DistContext.single(torch.device("cpu")).device == torch.device("cpu")


def test_shards_cover_rows_and_bad_environment_is_named(monkeypatch):
    for world in (1, 3, 4):
        parts = [DistContext(rank=r, world_size=world).shard(10) for r in range(world)]
        covered = [i for s in parts for i in range(s.start, s.stop)]
        assert covered == list(range(10))
        assert max(s.stop - s.start for s in parts) - min(s.stop - s.start for s in parts) <= 1
    with pytest.raises(ValueError, match="local must hold"):
        DistContext(rank=0, world_size=2).gather_rows(torch.zeros(3, 2), 10)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        DistContext.from_env(device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent"):
        DistContext.from_env(device="cpu")
