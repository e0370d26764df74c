"""Iterative Unlearning Refinement (paper §3.5): which forget samples count as forgotten now.

After every epoch, each still-active sample's continuation of its prefix is scored
against the true suffix (BERTScore F1 and BLEU); Eq. 5 decides which leave training.
Greedy generations come with the EL scoring; `num_beams > 1` regenerates by beam search.
"""

from __future__ import annotations

from .config import RefinementConfig
from .evaluate import EvalSettings
from .generation import generate_continuations
from .metrics.similarity import bertscore_f1, sentence_bleu, token_entropy


def is_forgotten(bertscore: float, bleu: float, config: RefinementConfig) -> bool:
    """Eq. 5: BERTScore < a and BLEU < b ("all", the paper); or either ("any", the authors' code)."""
    below_bert = bertscore < config.bertscore_max
    below_bleu = bleu < config.bleu_max
    return (below_bert and below_bleu) if config.rule == "all" else (below_bert or below_bleu)


def forgotten_now(
    model,
    tokenizer,
    samples: dict,
    rows: list[dict],
    active: list[str],
    config: RefinementConfig,
    settings: EvalSettings,
    procs,
) -> set[str]:
    """The ids among `active` that Eq. 5 calls forgotten, from this epoch's `rows`.

    With beam search the rows of the active samples gain `iur_*` fields (each process
    regenerates its share; every process gets all of them).
    """
    checked = [r for r in rows if r["id"] in active]
    key = ""
    if config.num_beams > 1:
        mine = [samples[r["id"]] for r in procs.score_share(checked)]
        extras = procs.gather(_beam_rows(model, tokenizer, mine, config, settings))
        for r, extra in zip(checked, extras, strict=True):
            r |= extra
        key = "iur_"
    return {
        r["id"] for r in checked if is_forgotten(r[f"{key}bertscore_f1"], r[f"{key}bleu"], config)
    }


def _beam_rows(model, tokenizer, samples, config: RefinementConfig, settings) -> list[dict]:
    """Beam-search generations of `samples` with their BERTScore, BLEU, entropy."""
    if not samples:
        return []
    gens = generate_continuations(
        model,
        [list(s.prefix_ids) for s in samples],
        [len(s.suffix_ids) for s in samples],
        tokenizer.pad_token_id,
        num_beams=config.num_beams,
        batch_size=settings.batch_size,
    )
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in gens]
    refs = [s.suffix for s in samples]
    bert = bertscore_f1(texts, refs, settings.bertscore_model, settings.bertscore_layers)
    bleu = sentence_bleu(texts, refs, smoothing=settings.bleu_smoothing)
    return [
        {"iur_generation": t, "iur_bertscore_f1": b, "iur_bleu": u, "iur_entropy": token_entropy(g)}
        for t, g, b, u in zip(texts, gens, bert, bleu, strict=True)
    ]
