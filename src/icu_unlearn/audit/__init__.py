"""The forgetting audit (DESIGN.md §3, "Audit"; `icu-unlearn audit`).

Greedy EL and MA are what an unlearning run optimises and stops on, so they
cannot be its only evidence. For every forget sequence, under the model M and
under a reference R that never saw the forget set, the audit measures what an
attacker gets who

* decodes greedily: exact suffix, EL_n, MA, extraction strength;
* samples: the exact probability p that one sample of a scheme writes the suffix
  (Hayes et al. 2024), from one teacher-forced pass, and 1 - (1 - p)^n for n
  samples; when asked (`sample[:N]`, `beam[:WIDTH]` among the attacks), the
  lm-extraction benchmark's sampling attack (N samples ranked by loss) and beam
  search, which decode and so cost far more;
* tests membership: LOSS, zlib, Min-K%, Min-K%++, with the AUC of forget vs
  never-seen holdout sequences under M and R, and MUSE's PrivLeak;
* holds the weights: 4/8-bit quantization and relearning on half the forget set,
  each followed by the same measurements;

and gives each sequence a verdict (`verdict.py`: leaked, as_reference,
not_extractable) and a `stands_out` flag. The holdout's own NLL and MA under M
against R show what unlearning did to text like the forgotten text. R's
measurements are cached by content (`cache.py`) and reused by the next audit.

`audit.json` (`AuditResult.write`):

    settings    AuditSettings' fields + model, reference, forget, holdout, attacks,
                num_samples, num_beams (0: not run), redact, prefix_length, seconds
    aggregates  num_sequences, verdicts {leaked, as_reference, not_extractable},
                leaked_by {test: count}, stands_out (count or null),
                model / reference: {greedy_exact, el_<n>, ma, extraction_strength,
                  loss, probabilistic [{scheme, mean_chance {n: ...}}],
                  sampling {best_exact, any_exact, mean_longest_run, max_longest_run},
                  beam_exact},
                membership {loss|zlib|min_k|min_k_pp: {auc_model, auc_reference,
                  privleak}} (null without holdout; privleak: MUSE's definition,
                  percent, over-unlearning positive, null without a reference;
                  min_k's, at mia_k = 0.4, is MUSE's and the headline),
                holdout {num_sequences, model / reference: {nll, ma, suffix_ma}}
    sequences   [{id, sha256, prefix_tokens, suffix_tokens, verdict, leaked_by,
                  reference_leaked_by, stands_out, model, reference}], where model
                and reference are {greedy {exact, el_<n>, ma, suffix_ma,
                  extraction_strength, generation}, probabilistic [{scheme, log10_p
                  (null for p = 0), chance {"1", "10", "100", "1000": ...}}],
                  sampling {best_exact, any_exact, exact_samples, longest_run,
                  best_run, best_sample} | null, beam {exact, run, beam_generation}
                  | null, membership {loss, zlib, min_k, min_k_pp}}
    holdout     [{id, sha256, model / reference: {loss, zlib, min_k, min_k_pp, ma,
                  suffix_ma}}]
    attacks     {spec: {sequences, aggregates (as above, under the attacked model
                  and the reference after the same attack), relearned_on [sha256]
                  for relearn}}

Texts appear only in `generation`, `best_sample` and `beam_generation`; with
redact=True they are hashes. No prefix or suffix text is ever written.
"""

from ..audit_settings import AuditSettings, SamplingScheme
from .api import audit
from .result import AuditResult

__all__ = ["AuditResult", "AuditSettings", "SamplingScheme", "audit"]
