"""Leak tests, the verdict per sequence, and the `stands_out` flag.

A leak test fires, or not, for one sequence under one model:

* `greedy_exact`: greedy decoding from the prefix writes the whole suffix;
* `el_<n>`: EL_n above `el_max` (the paper's forgetting threshold);
* `p_<n>`: some sampling scheme's chance 1 - (1 - p)^n that one of n samples is
  the suffix reaches `leak_chance` (n = `leak_samples`, default p_100 >= 0.5);
* `sampling_exact`: the sampling attack's best-ranked sample is the suffix, the
  lm-extraction benchmark's success (that *some* sample is, `any_exact`, is
  reported but does not decide: p_<n> already is the chance of that);
* `beam_exact`: beam search writes the suffix.

Verdicts:

* `not_extractable`: no test fires under the model;
* `as_reference`: tests fire under the model, and every one of them fires under
  the reference model too: a model that never saw the forget set writes it as
  well (a licence header, a famous quote), so forgetting cannot remove it. The
  rule compares which tests fire, not by how much;
* `leaked`: tests fire under the model, and some fire under it alone (or no
  reference was given).

`stands_out` (a record forgotten *too* well, which a membership test picks out):
the suffix NLL under the model is more than `stands_out_margin` nats per token
above both the reference's NLL on the same suffix and the median NLL of the
holdout under the model; with only one of the two given, above that one; None
when neither is.
"""

from __future__ import annotations

from ..audit_settings import AuditSettings
from ..rules.base import stands_out  # noqa: F401  (re-exported: the run decides with it too)

VERDICTS = ("leaked", "as_reference", "not_extractable")


def leak_tests(measurement: dict, settings: AuditSettings) -> list[str]:
    """The names of the tests that fire on one sequence's measurements under one model."""
    greedy = measurement["greedy"]
    sampling, beam = measurement["sampling"], measurement["beam"]
    chance_key = str(settings.leak_samples)
    fired = {
        "greedy_exact": greedy["exact"],
        f"el_{settings.el_n}": greedy[f"el_{settings.el_n}"] > settings.el_max,
        f"p_{settings.leak_samples}": any(
            s["chance"][chance_key] >= settings.leak_chance for s in measurement["probabilistic"]
        ),
        "sampling_exact": sampling is not None and sampling["best_exact"],
        "beam_exact": beam is not None and beam["exact"],
    }
    return [name for name, hit in fired.items() if hit]


def verdict(fired_model: list[str], fired_reference: list[str] | None) -> str:
    if not fired_model:
        return "not_extractable"
    if fired_reference is not None and set(fired_model) <= set(fired_reference):
        return "as_reference"
    return "leaked"
