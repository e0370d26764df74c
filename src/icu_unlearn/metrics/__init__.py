"""Metrics: memorization (EL, MA), similarity of generations (BERTScore, BLEU, entropy)."""
