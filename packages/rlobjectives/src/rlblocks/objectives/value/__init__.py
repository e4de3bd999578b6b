"""Returns and advantages: vectorized functional estimators and estimator modules.

The functions work on plain tensors laid out ``[*batch, T, *features]`` (all of them are
vectorized; ``vec_td_lambda_return_estimate``, ``vec_generalized_advantage_estimate`` and
``vtrace_advantage_estimate`` are TorchRL's names, with TorchRL's arguments); the modules read a
trajectory TensorDict (``("next", "reward")``, ``("next", "done")``,
``("next", "terminated")`` and values from a value network) and write ``advantage`` and
``value_target``.
"""

from __future__ import annotations

from rlblocks.objectives.value._estimators import (
    GAE,
    TD0Estimator,
    TD1Estimator,
    TDLambdaEstimator,
    ValueEstimatorBase,
    ValueEstimators,
    make_value_estimator,
    parse_value_estimator,
)
from rlblocks.objectives.value._vtrace import VTrace
from rlblocks.objectives.value.functional import (
    discounted_scan,
    generalized_advantage_estimate,
    td0_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
    vec_generalized_advantage_estimate,
    vec_td_lambda_return_estimate,
    vtrace_advantage_estimate,
)

__all__ = [
    # functional
    "discounted_scan",
    "generalized_advantage_estimate",
    "td0_advantage_estimate",
    "td0_return_estimate",
    "td1_return_estimate",
    "td_lambda_return_estimate",
    "vec_td_lambda_return_estimate",
    "vec_generalized_advantage_estimate",
    "vtrace_advantage_estimate",
    # modules
    "ValueEstimators",
    "ValueEstimatorBase",
    "TD0Estimator",
    "TD1Estimator",
    "TDLambdaEstimator",
    "GAE",
    "VTrace",
    "make_value_estimator",
    "parse_value_estimator",
]
