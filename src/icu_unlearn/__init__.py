"""icu-unlearn: make a causal language model forget specific sequences, and prove it."""

from ._version import __version__
from .config import RunConfig, load_config
from .data.forget import ForgetSample, load_forget_set
from .evaluate import EvalResult, EvalSettings, evaluate
from .metrics.memorization import memorization_scores, memorization_scores_reference
from .train import UnlearnResult, unlearn

__all__ = [
    "__version__",
    "EvalResult",
    "EvalSettings",
    "RunConfig",
    "UnlearnResult",
    "load_config",
    "unlearn",
    "ForgetSample",
    "evaluate",
    "load_forget_set",
    "memorization_scores",
    "memorization_scores_reference",
]
