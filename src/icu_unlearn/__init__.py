"""icu-unlearn: make a causal language model forget specific sequences, and prove it.

The public API loads on first use: `icu-unlearn --help` imports this package, and the
API's modules import torch (seconds). The imports are written out below, so that the
import graph (tests/unit/test_structure.py) sees them as it sees any other.
"""

import sys
import types

from ._version import __version__

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
    "memorization_scores_literal",
]


def _api() -> dict:
    from .config import RunConfig, load_config
    from .data.forget import ForgetSample, load_forget_set
    from .evaluate import EvalResult, EvalSettings, evaluate
    from .metrics.memorization import memorization_scores, memorization_scores_literal
    from .train import UnlearnResult, unlearn

    return {
        "EvalResult": EvalResult,
        "EvalSettings": EvalSettings,
        "RunConfig": RunConfig,
        "UnlearnResult": UnlearnResult,
        "load_config": load_config,
        "unlearn": unlearn,
        "ForgetSample": ForgetSample,
        "evaluate": evaluate,
        "load_forget_set": load_forget_set,
        "memorization_scores": memorization_scores,
        "memorization_scores_literal": memorization_scores_literal,
    }


class _Package(types.ModuleType):
    def __getattr__(self, name: str):
        if name not in __all__:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        api = _api()
        self.__dict__.update(api)
        return api[name]

    def __setattr__(self, name: str, value) -> None:
        # importing the submodule icu_unlearn.evaluate sets the package's attribute of that
        # name to the module; the package's `evaluate` is the function
        if name == "evaluate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
