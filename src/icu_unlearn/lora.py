"""LoRA through peft: train low-rank adapters only; the frozen original model is the same
modules with the adapters switched off, so reference-model methods hold no second copy."""

from __future__ import annotations

import torch

from .config import LoraConfig


def add_adapters(model, config: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


class AdaptersOff:
    """P_theta0 of a LoRA run: the adapted model's forward with its adapters disabled."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **inputs):
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.model.disable_adapter():
                return self.model(**inputs)
        finally:
            self.model.train(training)

    def state_dict(self) -> dict:
        """The base weights only: what must stay unchanged through the run."""
        return {k: v for k, v in self.model.state_dict().items() if "lora_" not in k}


def save(model, folder, config: LoraConfig) -> None:
    """A merged plain-transformers folder, or the adapter alone."""
    if config.save == "adapter":
        model.save_pretrained(folder, safe_serialization=True)
        return
    model.merge_and_unload().save_pretrained(folder, safe_serialization=True)
