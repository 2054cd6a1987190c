"""Solution-flow objectives and samplers (paper Sec. 3.1, 4.2, App. A.2, B.2, B.3; Algorithms 1, 2).

Backbone independent: any `net(x_t, t, s, cond, guidance, weak=False) -> F` works (x of any shape).
"""
from eflow_core.flow.ema import EMA, bias_corrected
from eflow_core.flow.losses import (
    adaptive_weight,
    flow_matching_loss,
    guided_velocity,
    mean_velocity,
    mix_velocity,
    mva_loss,
    mva_residual,
    per_sample_mse,
    solution_consistency_loss,
)
from eflow_core.flow.rows import logs_to_floats, row_count, split_batch
from eflow_core.flow.solution_flow import SolutionFlow
from eflow_core.flow.times import (
    inference_schedule,
    intermediate_ratio,
    mva_grid,
    sample_logit_normal,
    sample_mva_times,
    sample_scm_times,
    shift_time,
)

__all__ = [
    "EMA",
    "bias_corrected",
    "SolutionFlow",
    "split_batch",
    "adaptive_weight",
    "flow_matching_loss",
    "guided_velocity",
    "mean_velocity",
    "mix_velocity",
    "mva_loss",
    "mva_residual",
    "per_sample_mse",
    "solution_consistency_loss",
    "inference_schedule",
    "intermediate_ratio",
    "logs_to_floats",
    "row_count",
    "mva_grid",
    "sample_logit_normal",
    "sample_mva_times",
    "sample_scm_times",
    "shift_time",
]
