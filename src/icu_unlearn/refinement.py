"""Iterative Unlearning Refinement (paper §3.5): which forget samples count as forgotten now."""

from __future__ import annotations

from .config import RefinementConfig


def is_forgotten(bertscore: float, bleu: float, config: RefinementConfig) -> bool:
    """Eq. 5: BERTScore < a and BLEU < b ("all", the paper); or either ("any", the authors' code)."""
    below_bert = bertscore < config.bertscore_max
    below_bleu = bleu < config.bleu_max
    return (below_bert and below_bleu) if config.rule == "all" else (below_bert or below_bleu)
