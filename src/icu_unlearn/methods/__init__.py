"""The method registry: one small module per unlearning method, listed in a plain dict.

A method says which data it needs (analogous pairs, mismatched completions,
refusals, the frozen original model) and computes its loss on one batch; the one
training loop in `train.py` does the rest.
"""

from __future__ import annotations

from . import dpo, icu, kl, kumpr, llmu, memorize, npo

METHODS = {
    "icu": icu.METHOD,
    "kumpr": kumpr.METHOD,
    "kl": kl.METHOD,
    "llmu": llmu.METHOD,
    "dpo": dpo.METHOD,
    "npo": npo.METHOD,
}

# Planting (`icu-unlearn memorize`) runs through the loop too; it builds test subjects
# and is not an unlearning method, so `icu-unlearn methods` does not list it.
PLANTING = memorize.METHOD


def runnable(name: str):
    """The method the loop runs for `method: name` (an unlearning method, or planting)."""
    return PLANTING if name == PLANTING.name else METHODS[name]
