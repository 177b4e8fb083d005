"""Baseline distillation losses, one file each.

Vanilla and weighted distillation are `slam_bench.distill_loss` (weighted: `weight=` from
`slam_bench.estimators.fit_weights`); SLaM is `slam_bench.slam_loss`.
"""
from slam_bench.losses.forward_correction import forward_correction_loss
from slam_bench.losses.taylor_ce import taylor_ce_loss
from slam_bench.losses.ups import UPSSelection, mc_dropout_probs, ups_loss, ups_select
from slam_bench.losses.vid import VIDHead

__all__ = ["taylor_ce_loss", "forward_correction_loss", "ups_select", "ups_loss", "UPSSelection",
           "mc_dropout_probs", "VIDHead"]
