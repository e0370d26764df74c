"""Plant sequences into a model (fine-tune until memorized), to build unlearning test subjects.

The paper's GPT-Neo models memorized the Pile in pre-training; any other model
needs this step before there is anything to forget.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data.forget import load_forget_set
from .errors import UsageError
from .generation import right_pad
from .io import atomic_write_json, temp_dir
from .losses import nll_loss
from .metrics.memorization import memorization_accuracy
from .models import load_model_and_tokenizer


def memorize(
    model: str,
    forget: str,
    out: str | Path,
    lr: float = 1e-4,  # SmolLM2-135M plants 8 sequences in ~10 epochs at this rate
    max_epochs: int = 100,
    target_ma: float = 0.95,
    batch_size: int = 8,
    seed: int = 42,
    prefix_length: int = 50,
    data_dir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Fine-tune on the whole sequences until every one has MA >= target_ma; save to `out`."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already holds files; use --overwrite or another --out")
    torch.manual_seed(seed)
    net, tokenizer = load_model_and_tokenizer(model)
    samples = load_forget_set(
        forget,
        tokenizer,
        prefix_length,
        data_dir,
        vocab_size=net.get_input_embeddings().num_embeddings,
    )
    seqs = [s.input_ids for s in samples]
    pad = tokenizer.pad_token_id
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    started = time.perf_counter()
    bar = tqdm(range(1, max_epochs + 1), desc="memorize", unit="epoch", disable=not progress)
    for epoch in bar:
        net.train()
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(seqs), generator=generator).tolist()
        for k in range(0, len(order), batch_size):
            batch = [seqs[i] for i in order[k : k + batch_size]]
            ids, mask = right_pad(batch, pad)
            logits = net(input_ids=ids, attention_mask=mask).logits
            loss = nll_loss(logits, ids, mask, torch.ones(len(batch), dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        ma = memorization_accuracy(net, seqs, pad)
        history.append(
            {"epoch": epoch, "loss": loss.item(), "min_ma": min(ma), "mean_ma": sum(ma) / len(ma)}
        )
        bar.set_postfix(loss=f"{loss.item():.3f}", min_ma=f"{min(ma):.3f}")
        if min(ma) >= target_ma:
            break
    reached = min(ma) >= target_ma
    _save(net, tokenizer, out)
    report = {
        "model": model,
        "forget": forget,
        "epochs": len(history),
        "reached": reached,
        "target_ma": target_ma,
        "ma": dict(zip([s.id for s in samples], ma, strict=True)),
        "lr": lr,
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
    }
    atomic_write_json(out / "memorize.json", report)
    return report


def _save(model, tokenizer, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out.parent, f".{out.name}.")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
