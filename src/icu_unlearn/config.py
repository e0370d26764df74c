"""Run configuration: typed dataclasses, one schema for YAML, `--set a.b=value` and Python.

Every default carries the reason for its value. Unknown keys are errors that list
the valid ones; values are checked in `__post_init__` with messages naming the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .audit_settings import AuditSettings, SamplingScheme
from .errors import UsageError
from .precision import check_precision
from .rules import RULES


@dataclass
class ScoringSettings:
    """How forget sets are scored: shared by `icu-unlearn eval` and a run's `eval:` section."""

    batch_size: int = field(default=8, metadata={"help": "sequences per forward pass"})
    decode_batch_size: int = field(
        default=128,
        metadata={"help": "EL decoding rows per step; per-token cost on CPU bottoms out here"},
    )
    bertscore_model: str | None = field(
        default=None,
        metadata={
            "help": "BERTScore encoder folder or id; default the packaged all-MiniLM-L6-v2 "
            "(the authors' code used bert-base-uncased, which is not offline here)"
        },
    )
    bertscore_layers: int = field(
        default=6, metadata={"help": "encoder layer BERTScore reads (MiniLM has 6)"}
    )
    bleu_smoothing: str = field(
        default="none",
        metadata={
            "help": "sentence BLEU's smoothing (none, exp, floor, add-k); none, on lower-cased "
            "words, is what the authors scored: a fluent unrelated sentence scores 0"
        },
    )

    def __post_init__(self):
        if self.batch_size < 1 or self.decode_batch_size < 1:
            raise UsageError("eval batch sizes must be at least 1")
        if self.bleu_smoothing not in ("none", "exp", "floor", "add-k"):
            raise UsageError(
                f"bleu_smoothing must be none, exp, floor or add-k, got {self.bleu_smoothing!r}"
            )


@dataclass
class RunScoringSettings(ScoringSettings):
    """A run's `eval:` section: the scoring settings, and how it scores epoch after epoch."""

    verify: bool = field(
        default=True,
        metadata={
            "help": "EL's greedy continuations: verify last epoch's in one pass and decode "
            "only past the first disagreement (the same tokens, a fraction of the decoding); "
            "false decodes every one afresh"
        },
    )


@dataclass
class AnalogousConfig:
    pool: str | None = field(
        default=None,
        metadata={"help": "None: lm-extraction train rows minus the forget set (paper §4.1)"},
    )
    pool_limit: int | None = field(
        default=None,
        metadata={"help": "first N pool rows only: embedding 15k rows costs ~5 min on CPU"},
    )
    encoder: str | None = field(
        default=None,
        metadata={"help": "None: the packaged all-MiniLM-L6-v2 (the paper's f_s)"},
    )
    k: int = field(
        default=1,
        metadata={"help": "the paper's K = 1: one learn sample per forget sample"},
    )
    max_similarity: float = field(
        default=0.9,
        metadata={"help": "near-copies (licence boilerplate) undo the forgetting"},
    )
    max_tokens: int = field(
        default=100,
        metadata={"help": "pool texts are cut to the forget samples' 50 + 50 tokens"},
    )
    shared_tokens: int = field(
        default=10,
        metadata={
            "help": "a pool text that shares a run of this many tokens with any forget "
            "sample is never learnt (it would teach the record back: EL_10 counts such "
            "runs; licence boilerplate passes max_similarity at 0.89); 0: off, the paper's "
            "pairing by similarity alone"
        },
    )

    def __post_init__(self):
        if self.k < 1:
            raise UsageError(f"analogous.k must be at least 1, got {self.k}")
        if self.shared_tokens < 0:
            raise UsageError(
                f"analogous.shared_tokens must be 0 (off) or a token count, got {self.shared_tokens}"
            )
        if not 0 < self.max_similarity <= 1:
            raise UsageError("analogous.max_similarity must be in (0, 1]; 1 keeps every neighbour")


@dataclass
class RefinementConfig:
    enabled: bool = field(
        default=True,
        metadata={"help": 'IUR (paper §3.5); false is the "without IUR" ablation'},
    )
    rule: str = field(
        default="all",
        metadata={
            "help": '"all": BERTScore < a AND BLEU < b (Eq. 5); "any": the authors\' code (OR)'
        },
    )
    bertscore_max: float = field(
        default=0.3,
        metadata={"help": "a of Eq. 5"},
    )
    bleu_max: float = field(
        default=0.01,
        metadata={
            "help": "b of Eq. 5, on a 0-1 scale. It assumes unsmoothed BLEU (eval.bleu_smoothing: none, the authors' scoring): with sacrebleu's exp smoothing an unrelated fluent sentence scores ~0.03, so b = 0.01 would pass only degenerate text."
        },
    )
    num_beams: int = field(
        default=1,
        metadata={"help": "greedy; the authors' code used 2"},
    )
    readmit: bool = field(
        default=False,
        metadata={
            "help": "false (the paper's wording): a removed sample is removed for good; true (the authors' code): every sample is checked each epoch and one that regained its memory comes back"
        },
    )

    def __post_init__(self):
        if self.rule not in ("all", "any"):
            raise UsageError(f"refinement.rule must be 'all' or 'any', got {self.rule!r}")
        if self.num_beams < 1:
            raise UsageError("refinement.num_beams must be at least 1")


@dataclass
class StopConfig:
    el_n: int = field(
        default=10,
        metadata={"help": "EL_10, as the paper reports"},
    )
    el_window: bool = field(
        default=True,
        metadata={
            "help": "True: EL over prefix lengths >= t0 only, as the authors' code computed it. L_fgt trains the suffix only: a model that forgot every suffix token but kept its prefix memory still has EL_10 ~0.12 over every prefix length of 50 + 50 tokens."
        },
    )
    el_max: float = field(
        default=0.0499,
        metadata={"help": "paper §4.4: mean EL_10 of the forget set under 4.99%"},
    )
    ma_max: float = field(
        default=0.5994,
        metadata={"help": "paper §4.4: mean MA under 59.94%"},
    )
    thresholds: str = field(
        default="fixed",
        metadata={"help": '"auto": the model\'s own means on held-out sequences'},
    )
    heldout: str = field(
        default="pile-validation:32",
        metadata={
            "help": 'Sequences for "auto": Pile validation text, which no model trained on the Pile\'s training split saw. A model trained on other web text may have seen it: then give held-out text of your own.'
        },
    )
    scope: str = field(
        default="each",
        metadata={
            "help": '"each": every sequence must meet the criteria on its own (a deletion request names records); "mean": the paper\'s rule on the forget set\'s means (the paper presets)'
        },
    )
    reference: str | None = field(
        default=None,
        metadata={
            "help": "A model that never trained on the forget set (for planted subjects: the model before `memorize`). A sequence no more extractable under the run's model than under it is done, and one whose suffix is as unlikely as under it leaves training."
        },
    )
    reference_margin: float = field(
        default=0.05,
        metadata={
            "help": "EL and MA may exceed the reference's by this much and count as no more "
            "extractable: on the demo the reference target brought every suffix to the "
            "reference's NLL within 0.02 nats by epoch 15 while MA stayed 0.01-0.05 above "
            "its (a few near-tied argmax tokens in 99), with EL 0"
        },
    )
    reference_nll_margin: float = field(
        default=0.5,
        metadata={
            "help": "nats a token: a sequence counts as done only once its suffix NLL is within "
            "this of never-seen text's (the reference's, or without one audit.holdout's median "
            "under the model), and leaves training while it is: a suffix likelier than that "
            "still gives itself away to a likelihood test, and ascent past it makes the record "
            "stand out (audit.stands_out_margin bounds the other side)"
        },
    )
    token_floor: float | None = field(
        default=None,
        metadata={
            "help": "The reference bounds each suffix token from below: the ascent term pushes a token down only while its log-probability is above the reference's for that token less this many nats, and pulls it back up once below, so a record ends near \"never seen\" instead of far below it (gradient ascent pushes an already unlikely token down as hard as a likely one). null: off, the paper's ascent on every suffix token. Not the paper's loss. Needs stop.reference."
        },
    )

    def __post_init__(self):
        if self.thresholds not in ("fixed", "auto"):
            raise UsageError(f"stop.thresholds must be 'fixed' or 'auto', got {self.thresholds!r}")
        if self.scope not in RULES:
            raise UsageError(f"stop.scope must be one of {', '.join(RULES)}, got {self.scope!r}")
        if self.reference_margin < 0 or self.reference_nll_margin < 0:
            raise UsageError("stop.reference_margin and reference_nll_margin must be >= 0")
        if self.token_floor is not None and self.token_floor < 0:
            raise UsageError(f"stop.token_floor must be >= 0 nats, got {self.token_floor}")


@dataclass
class LogConfig:
    el_every_epoch: bool = field(
        default=False,
        metadata={
            "help": "false: EL only where it can decide (MA under ma_max, or the reference rule within reach), everything at epoch 0 and at the end; true: every sequence every epoch, for curves. Both give the same run (decisions and weights)."
        },
    )


@dataclass
class KUMPRConfig:
    suffix_only: bool = field(
        default=False,
        metadata={
            "help": "Jang et al. (2023) ascend on every token of the sequence; true: the suffix only (t >= t0)"
        },
    )


@dataclass
class MemorizeConfig:
    target_ma: float = field(
        default=0.95,
        metadata={
            "help": "`icu-unlearn memorize` (method memorize) stops when every sequence's MA reaches this"
        },
    )

    def __post_init__(self):
        if not 0 < self.target_ma <= 1:
            raise UsageError(f"memorize.target_ma must be in (0, 1], got {self.target_ma}")


@dataclass
class LLMUConfig:
    forget_weight: float = field(
        default=0.5,
        metadata={
            "help": "The LLMU paper's defaults (Yao et al., 2023: bad, random, normal weights) gradient ascent on the forget suffixes"
        },
    )
    mismatch_weight: float = field(
        default=1.0,
        metadata={"help": "NLL of each forget prefix continued by a pool text"},
    )
    kl_weight: float = field(
        default=1.0,
        metadata={"help": "KL to the original model on normal (analogous) data"},
    )
    num_mismatches: int = field(
        default=5,
        metadata={"help": "LLMU's K random completions per forget sample and step"},
    )
    redraw: bool = field(
        default=True,
        metadata={"help": "LLMU draws them anew every step; false: one fixed draw per sample"},
    )

    def __post_init__(self):
        if self.num_mismatches < 1:
            raise UsageError(f"llmu.num_mismatches must be at least 1, got {self.num_mismatches}")


DEFAULT_REFUSALS = [
    "I don't know.",
    "I'm not sure.",
    "I cannot recall that.",
    "I have no information about that.",
    "Sorry, I don't remember.",
]


@dataclass
class DPOConfig:
    beta: float = field(
        default=0.1,
        metadata={"help": "the DPO paper's default"},
    )
    refusals: list[str] = field(
        default_factory=lambda: list(DEFAULT_REFUSALS), metadata={"help": "preferred side"}
    )
    redraw: bool = field(
        default=True,
        metadata={"help": "TOFU draws the refusal anew every step; false: one per sample"},
    )

    def __post_init__(self):
        if self.beta <= 0:
            raise UsageError(f"dpo.beta must be positive, got {self.beta}")
        if not self.refusals or not all(r.strip() for r in self.refusals):
            raise UsageError("dpo.refusals must be a non-empty list of non-empty texts")


@dataclass
class NPOConfig:
    beta: float = field(
        default=0.1,
        metadata={"help": "the NPO paper's default"},
    )

    def __post_init__(self):
        if self.beta <= 0:
            raise UsageError(f"npo.beta must be positive, got {self.beta}")


@dataclass
class ProbeConfig:
    retain: str | None = field(
        default=None,
        metadata={
            "help": "Sequences the run must not forget (a forget-set spec): MA and EL every epoch."
        },
    )
    heldout: str | None = field(
        default=None,
        metadata={
            "help": "Held-out sequences (a forget-set spec; whole sequences scored): perplexity every epoch."
        },
    )
    retain_weight: float = field(
        default=3.0,
        metadata={
            "help": "Weight of the retain term: every step, KL(P_input || P_theta) at every "
            "position of probe.retain records (their next-token distributions under the input "
            "model, computed once at set-up), so that the records to keep are held, not only "
            "watched. Measured on the 32-sequence protocol: without it the reference target "
            "cost 4 of the 8 kept records 0.1-0.2 of their MA in 2 epochs; at weight 1 the prefix "
            "term (prefix_weight) cost a kept LGPL record sharing GPL boilerplate with forget "
            "records 0.11 of its MA in 2 epochs, at 3 it held. 0: watched only."
        },
    )
    max_perplexity_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Stop as diverged when held-out perplexity exceeds this multiple of the input model's (ascent can wreck a model in one step); None: watch only."
        },
    )
    retain_max_ma_drop: float | None = field(
        default=0.1,
        metadata={
            "help": "A probe.retain record is damaged when its MA falls more than this below its own MA before the run (0.1: a tenth of its tokens no longer the greedy next token; a memorized record may go from 1.0 to 0.9, ordinary text from 0.3 to 0.2); the run then stops as retain_damaged, keeps the last good model and exits 3. Each record against its own level, since kept records may be memorized or ordinary text; a drop, not a fraction of it, since a fraction of a low MA is noise (one token of 20 is 0.05). None: watch only."
        },
    )

    def __post_init__(self):
        if self.retain_weight < 0:
            raise UsageError(f"probe.retain_weight must be >= 0, got {self.retain_weight}")
        if self.max_perplexity_ratio is not None:
            if not self.heldout:
                raise UsageError("probe.max_perplexity_ratio needs probe.heldout sequences")
            if self.max_perplexity_ratio <= 1:
                raise UsageError("probe.max_perplexity_ratio must be above 1, e.g. 1.5")
        if self.retain_max_ma_drop is not None and not 0 <= self.retain_max_ma_drop < 1:
            raise UsageError("probe.retain_max_ma_drop must be in [0, 1), e.g. 0.1")


def _as_audit(name: str):
    """A field with `AuditSettings.<name>`'s default: one place holds the audit's defaults."""
    source = {f.name: f for f in dataclasses.fields(AuditSettings)}[name]
    if source.default is not dataclasses.MISSING:
        return field(default=source.default, metadata=source.metadata)
    return field(default_factory=source.default_factory, metadata=source.metadata)


@dataclass
class AuditRunConfig:
    """The audit of the run's result (`icu-unlearn audit`), written to audit.json.

    EL's n and window, the leak threshold and the batch sizes come from the run
    (stop.*, eval.*); the attacker's settings are AuditSettings' and default as there.
    """

    enabled: bool = field(
        default=True,
        metadata={"help": "evidence beyond the greedy numbers the run stopped on"},
    )
    holdout: str | None = field(
        default=None,
        metadata={"help": "never-seen sequences like the forget set: membership AUCs"},
    )
    attacks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "attacks on the result: sample[:N] and beam[:WIDTH] (decoding, off unless "
            "given), quantize:4, quantize:8, bnb:4, bnb:8, relearn"
        },
    )
    schemes: list[SamplingScheme] = _as_audit("schemes")
    attacker_samples: list[int] = _as_audit("attacker_samples")
    leak_samples: int = _as_audit("leak_samples")
    leak_chance: float = _as_audit("leak_chance")
    sampler: SamplingScheme = _as_audit("sampler")
    seed: int = _as_audit("seed")
    mia_k: float = _as_audit("mia_k")
    stands_out_margin: float = _as_audit("stands_out_margin")
    quantize_group_size: int = _as_audit("quantize_group_size")
    relearn_lr: float = _as_audit("relearn_lr")
    relearn_batch_size: int = _as_audit("relearn_batch_size")

    def settings(self, **from_run) -> AuditSettings:
        """AuditSettings of these fields and the run's (`from_run`); checks them all."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("enabled", "holdout", "attacks"):
            del own[key]
        return AuditSettings(**own, **from_run)

    def __post_init__(self):
        # every value checked now, where a bad one is a config error, not at the run's end
        self.settings()


@dataclass
class LoraConfig:
    r: int = field(
        default=0,
        metadata={"help": "adapter rank; 0 trains the full model"},
    )
    alpha: int = field(
        default=16,
        metadata={"help": "scaling alpha / r, peft's default"},
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "no dropout: resumed and uninterrupted runs stay identical"},
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "None: peft's default for the architecture"},
    )
    save: str = field(
        default="merged",
        metadata={"help": '"merged": a plain transformers folder; "adapter": the adapter only'},
    )

    def __post_init__(self):
        if self.r < 0:
            raise UsageError(f"lora.r must be >= 0 (0 turns LoRA off), got {self.r}")
        if self.save not in ("merged", "adapter"):
            raise UsageError(f"lora.save must be 'merged' or 'adapter', got {self.save!r}")


FORGET_TARGETS = ("auto", "ascent", "reference", "calibrated")


@dataclass
class RunConfig:
    model: str = field(
        default="",
        metadata={"help": "hub id, local folder, or smollm2-135m"},
    )
    forget: str = field(
        default="",
        metadata={"help": "forget-set spec"},
    )
    method: str = field(
        default="icu", metadata={"help": "the unlearning method (icu-unlearn methods lists them)"}
    )
    forget_target: str = field(
        default="auto",
        metadata={
            "help": "what the forget term pulls each forget suffix to: ascent (the paper's "
            "L_fgt: no floor, deleted records end far less likely than never-seen text and "
            "stand out), reference (KL to stop.reference's next-token distributions: as if "
            "never trained), calibrated (the suffix NLL of audit.holdout's never-seen text "
            "under the model); auto: reference with stop.reference, else calibrated with "
            "audit.holdout, else ascent (benchmarks/results/forget_target.md)"
        },
    )
    prefix_weight: float = field(
        default=1.0,
        metadata={
            "help": "forget_target reference: weight of a term holding each record's prefix "
            "NLL at the reference's too (the prefix was learnt with the record: KL on the "
            "suffix alone left it 1.4 nats a token likelier than under the reference on 32 "
            "sequences, and its planted argmaxes kept MA above the reference's); 0: off "
            "(benchmarks/results/forget_target.md, docs/fidelity.md)"
        },
    )
    relearn_step: float = field(
        default=0.0,
        metadata={
            "help": "Durability against the relearn attack (experimental): each step's "
            "gradient is taken at the weights moved one sign step of this size along the "
            "relearning direction (the NLL gradient of the step's forget sequences, whole, "
            "as the attack trains; its first Adam step moves each weight by its lr, "
            "audit.relearn_lr), then applied at the weights as they were: sharpness-aware "
            "forgetting toward the attack. One forward and backward more a step, one copy "
            "of the trained weights. One process or DDP. 0: off"
        },
    )
    prefix_length: int = field(
        default=50,
        metadata={"help": "t0: the paper's 50-token prefixes"},
    )
    alpha: float = field(
        default=0.5,
        metadata={"help": "weight of L_lrn (paper §4.4)"},
    )
    beta: float = field(
        default=1.0,
        metadata={"help": "weight of L_kl (paper §4.4)"},
    )
    lr: float = field(
        default=5e-6,
        metadata={"help": "paper §4.4, set for 128 samples at 16 steps an epoch"},
    )
    adam_betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999],
        metadata={
            "help": "torch's Adam default; the authors' code used (0.9, 0.98) (the paper presets set it)"
        },
    )
    dropout: bool = field(
        default=False,
        metadata={
            "help": "false: dropout off while training, as both reference codebases unlearn (and runs stay deterministic, L_kl 0 at the start); true: the model's own dropout"
        },
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "true: recompute each decoder layer's activations in backward instead of holding them (transformers' checkpointing; dropout stays off): about 2 GB less at SmolLM2 batch 8"
        },
    )
    precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32 or bf16: bf16 trains under autocast (float32 weights, optimizer "
            "state and losses) and scores on bfloat16 copies of the weights: faster on a GPU "
            "or a CPU with AVX-512 BF16; fp32 is the paper's and every earlier run's"
        },
    )
    batch_size: int | str = field(
        default=8,
        metadata={"help": 'effective (global) batch, paper §4.4; "all": one step an epoch'},
    )
    grad_accum: int = field(
        default=1,
        metadata={
            "help": "accumulation steps; per-process batch = batch_size / (processes x grad_accum)"
        },
    )
    max_epochs: int = field(
        default=100, metadata={"help": "epoch budget; a run out of epochs ends incomplete (exit 3)"}
    )
    seed: int = field(default=42, metadata={"help": "seeds the batch order and every draw"})
    data_dir: str | None = field(
        default=None, metadata={"help": "offline data mirror (default: $ICU_DATA_DIR)"}
    )
    out: str | None = field(default=None, metadata={"help": "the run directory (also --out)"})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "run a model repository's own code: off unless you trust it"},
    )
    redact: bool = field(
        default=False,
        metadata={"help": "forgotten texts in samples.jsonl and checkpoints as hashes only"},
    )
    eval: RunScoringSettings = field(
        default_factory=RunScoringSettings,
        metadata={
            "help": "how the run scores (batch sizes, BERTScore's encoder); EL's n and window are stop's"
        },
    )
    analogous: AnalogousConfig = field(default_factory=AnalogousConfig)
    refinement: RefinementConfig = field(default_factory=RefinementConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    kumpr: KUMPRConfig = field(default_factory=KUMPRConfig)
    llmu: LLMUConfig = field(default_factory=LLMUConfig)
    memorize: MemorizeConfig = field(default_factory=MemorizeConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    npo: NPOConfig = field(default_factory=NPOConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    audit: AuditRunConfig = field(default_factory=AuditRunConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self):
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if isinstance(self.batch_size, str) and self.batch_size != "all":
            raise UsageError(f"batch_size must be a number or 'all', got {self.batch_size!r}")
        if self.grad_accum < 1 or (self.batch_size != "all" and self.batch_size < 1):
            raise UsageError("batch_size and grad_accum must be at least 1")
        if self.batch_size != "all" and self.batch_size % self.grad_accum:
            raise UsageError(
                f"batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}"
            )
        if self.max_epochs < 1:
            raise UsageError("max_epochs must be at least 1")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise UsageError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.relearn_step < 0:
            raise UsageError(f"relearn_step must be 0 (off) or more, got {self.relearn_step}")
        if self.prefix_weight < 0:
            raise UsageError(f"prefix_weight must be 0 (off) or more, got {self.prefix_weight}")
        if self.forget_target not in FORGET_TARGETS:
            raise UsageError(
                f"forget_target must be one of {', '.join(FORGET_TARGETS)}, "
                f"got {self.forget_target!r}"
            )
        if self.alpha < 0 or self.beta < 0:
            raise UsageError("alpha and beta must be >= 0 (0 is the ablation without that term)")
        check_precision(self.precision)

    def require(self) -> None:
        """Checks that only a complete config (ready to run) must pass."""
        for key in ("model", "forget"):
            if not getattr(self, key):
                raise UsageError(f"the config has no {key!r}; set it in the YAML or --set {key}=…")
        # here, not at the top: the methods import torch, which `run --help` (the config's
        # fields) should not wait for
        from .methods import METHODS, PLANTING, runnable

        if self.method not in METHODS and self.method != PLANTING.name:
            raise UsageError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.stop.token_floor is not None and self.stop.reference is None:
            raise UsageError(
                "stop.token_floor needs stop.reference: the floor is the reference model's "
                "own log-probability of each suffix token"
            )
        if self.stop.token_floor is not None and not runnable(self.method).ascends:
            ascending = ", ".join(name for name, m in METHODS.items() if m.ascends)
            raise UsageError(
                f"stop.token_floor bounds the gradient-ascent term, which {self.method} has "
                f"not; use it with {ascending}"
            )

        if self.method != PLANTING.name:
            RULES[self.stop.scope].check_config(self)
        target = self.resolved_forget_target()
        if target not in runnable(self.method).targets:
            able = [n for n, m in METHODS.items() if target in m.targets]
            raise UsageError(
                f"forget_target {target} replaces a forget term that {self.method} has not; "
                f"use it with {', '.join(able)}, or set forget_target: ascent"
            )
        if target == "reference" and self.stop.reference is None:
            raise UsageError(
                "forget_target: reference needs stop.reference, a model that never trained on "
                "the forget set (the base model you fine-tuned from; for planted test "
                "subjects the model before memorize)"
            )
        if target == "calibrated" and not self.audit.holdout:
            raise UsageError(
                "forget_target: calibrated needs audit.holdout, never-seen sequences like the "
                "forget set: their NLL under the model is the level a forgotten suffix goes to"
            )
        if target != "ascent" and self.stop.token_floor is not None:
            raise UsageError(
                "stop.token_floor bounds the ascent term; forget_target "
                f"{target} has none: drop stop.token_floor or set forget_target: ascent"
            )

    def resolved_forget_target(self) -> str:
        """`forget_target` with auto decided: reference with stop.reference, calibrated
        with audit.holdout, else ascent (and ascent with stop.token_floor); a method without a forget term to replace keeps
        its own (ascent)."""
        if self.forget_target != "auto":
            return self.forget_target
        from .methods import runnable

        targets = runnable(self.method).targets
        if self.stop.token_floor is not None:  # a floor is asked for the ascent term
            return "ascent"
        if self.stop.reference is not None and "reference" in targets:
            return "reference"
        if self.audit.holdout and "calibrated" in targets:
            return "calibrated"
        return "ascent"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def valid_keys(cls=RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        nested = _nested_type(cls, f.name)
        keys += valid_keys(nested, f"{prefix}{f.name}.") if nested else [prefix + f.name]
    return keys


def _nested_type(cls, name: str):
    hint = typing.get_type_hints(cls)[name]
    return hint if dataclasses.is_dataclass(hint) else None


def _coerce(value: Any, hint, key: str) -> Any:
    """Check a YAML value against the field's type; ints pass for floats."""
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, key + ".")
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise UsageError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise UsageError(f"{key} cannot be empty")
    for option in options:
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):
            try:  # YAML 1.1 reads 5e-6 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (bool, str) and isinstance(value, option):
            return value
        if option is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise UsageError(f"{key} must be {names}, got {value!r}")


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise UsageError(
            f"{prefix.rstrip('.') or 'the config'} must be a mapping of keys to values"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(
            f"unknown config key {prefix}{unknown[0]}; "
            f"valid keys: {', '.join(valid_keys(cls, prefix))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        nested = hints[name] if dataclasses.is_dataclass(hints[name]) else None
        kwargs[name] = (
            _build(nested, value, key + ".") if nested else _coerce(value, hints[name], key)
        )
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UsageError(f"--set {text!r} must look like key=value, e.g. --set alpha=0.5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """YAML file (optional) + dotted overrides -> a validated RunConfig."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UsageError(f"config file {str(path)!r} is not valid YAML{where}") from None
        if not isinstance(data, dict):
            raise UsageError(f"config file {str(path)!r} must be a mapping of keys to values")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return _build(RunConfig, data)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def config_help(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, reason) for every config key: what `icu-unlearn run --help` lists."""
    rows = []
    for f in dataclasses.fields(cls):
        nested = _nested_type(cls, f.name)
        if nested:
            rows += config_help(nested, f"{prefix}{f.name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        if dataclasses.is_dataclass(default):
            default = dataclasses.asdict(default)
        elif isinstance(default, list):
            default = [dataclasses.asdict(d) if dataclasses.is_dataclass(d) else d for d in default]
        shown = yaml.safe_dump(default, default_flow_style=True, width=10**6).strip()
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        rows.append((prefix + f.name, shown, f.metadata.get("help", "")))
    return rows
