"""The table that chooses the default forget target: each method with the paper's ascent
term and with the reference target (KL to the never-planted model), dpo as it is; every
result audited (membership against the holdout, the reference beside it), its kept
sequences, holdout likelihood and perplexity measured, then audited again after the
robustness attacks (quantize:4 and relearn, each also applied to the reference).

Two protocols: `demo` (the demo's subjects: 4 of lm-extraction:8_0 forgotten, the other 4
kept) and `lm32` (lm-extraction:32_0 planted with the 8 of 8_1 to keep, 32_2 the holdout;
the planted model is made here by `memorize` when --planted holds none).

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/forget_target.py \
        --planted runs/demo/planted --out runs/forget-target
    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/forget_target.py \
        --protocol lm32 --planted runs/lm32/planted --out runs/lm32 --only icu-reference

Resumable: every finished run and measurement is kept in --out, and the table
(benchmarks/results/forget_target[_lm32].md) is rewritten after each one; it shows every
run measured in --out, by this invocation or an earlier one with another --only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from icu_unlearn import load_config
from icu_unlearn.audit.api import audit
from icu_unlearn.audit_settings import AuditSettings
from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.demo import ids_spec
from icu_unlearn.evaluate import EvalSettings, evaluate
from icu_unlearn.io import atomic_write_json, atomic_write_text
from icu_unlearn.memorize import MemorizeSettings, plant
from icu_unlearn.metrics.similarity import token_entropy
from icu_unlearn.metrics.utility import evaluate_utility
from icu_unlearn.models import load_model_and_tokenizer
from icu_unlearn.scoring import teacher_forced
from icu_unlearn.train import finish_run

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "smollm2-135m"  # the model before planting
ATTACKS = ["quantize:4", "relearn"]
HAND_WRITTEN = "<!-- written by hand from here on; forget_target.py keeps it -->"


@dataclass(frozen=True)
class Protocol:
    title: str
    forget: str
    keep: str  # planted, not to forget
    holdout: str  # never planted
    settings: dict  # of every run
    results: str  # file under benchmarks/results


PROTOCOLS = {
    "demo": Protocol(
        "the demo's subjects (SmolLM2-135M with lm-extraction:8_0 planted)",
        "lm-extraction:ids=1670,13379,10234,4719",  # the demo's first half of 8_0
        "lm-extraction:ids=7003,2831,13014,11979",  # its second half
        "lm-extraction:8_1",
        {"lr": 1e-4, "batch_size": 2, "max_epochs": 30, "analogous.pool_limit": 500},
        "forget_target.md",
    ),
    "lm32": Protocol(
        "the 32-sequence protocol (SmolLM2-135M with lm-extraction:32_0 and 8_1 planted)",
        "lm-extraction:32_0",
        "lm-extraction:8_1",
        "lm-extraction:32_2",
        {
            "lr": 1e-4,
            "batch_size": 8,
            "max_epochs": 40,
            "analogous.pool_limit": 2000,
            "stop.el_window": "true",
            "probe.retain": "lm-extraction:8_1",
        },
        "forget_target_lm32.md",
    ),
}
# in the order they run: the candidates for the default first
RUNS = {
    f"{method}-{target}": {"method": method, "forget_target": target}
    for method in ("icu", "kumpr", "npo", "kl", "llmu")
    for target in ("reference", "ascent")
} | {
    "dpo": {"method": "dpo", "forget_target": "ascent"},
    # the paper's ICU: ascent, the forget set's mean EL and MA decide
    "icu-paper": {"method": "icu", "forget_target": "ascent", "stop.scope": "mean"},
    # the prefix held at the reference's NLL too
    "icu-reference-prefix": {"method": "icu", "forget_target": "reference", "prefix_weight": 1},
    # and the kept records held harder against the prefix term's pull on shared boilerplate
    "icu-reference-prefix-rw3": {
        "method": "icu",
        "forget_target": "reference",
        "prefix_weight": 1,
        "probe.retain_weight": 3,
    },
    # the default with each step's gradient taken one attacker's relearning step away
    "icu-reference-prefix-rw3-relearn": {
        "method": "icu",
        "forget_target": "reference",
        "prefix_weight": 1,
        "probe.retain_weight": 3,
        "relearn_step": 1e-4,
    },
    # the same, a third of the step: between the default and the step above
    "icu-reference-prefix-rw3-relearn-3e-5": {
        "method": "icu",
        "forget_target": "reference",
        "prefix_weight": 1,
        "probe.retain_weight": 3,
        "relearn_step": 3e-5,
    },
    # the kept records watched only, not held by the retain term
    "icu-reference-watched": {
        "method": "icu",
        "forget_target": "reference",
        "probe.retain_weight": 0,
    },
}


def _cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value)
    return value


def _run(name: str, protocol: Protocol, planted: str, out: Path) -> dict:
    keys = {"model": planted, "forget": protocol.forget, "out": out / name}
    keys |= {"audit.holdout": protocol.holdout, "stop.reference": REFERENCE}
    keys |= protocol.settings | RUNS[name]
    started = time.perf_counter()
    manifest = finish_run(load_config(None, [f"{k}={v}" for k, v in keys.items()]))
    # this invocation's time: a resumed run's covers its last part only
    return manifest | {"wall_seconds": round(time.perf_counter() - started, 1)}


def _plant(protocol: Protocol, planted: Path) -> None:
    """The planted model of the protocol: forget and keep sequences together, every one
    to MA >= 0.95 (resumed where a planting was interrupted)."""
    _, tokenizer = load_model_and_tokenizer(REFERENCE)
    forget = [s.id for s in load_forget_set(protocol.forget, tokenizer)]
    keep = [s.id for s in load_forget_set(protocol.keep, tokenizer) if s.id not in forget]
    settings = MemorizeSettings(REFERENCE, ids_spec(forget + keep), str(planted), max_epochs=60)
    plant(settings)


def _audit(model: str, protocol: Protocol, attacks: list[str]) -> dict:
    """The audit (el window as the runs measure) of `model` on the forget set against
    the holdout and the reference; `attacks` each also applied to the reference."""
    result = audit(
        model,
        protocol.forget,
        holdout=protocol.holdout,
        reference=REFERENCE,
        settings=AuditSettings(el_window=True),
        attacks=attacks,
    )
    return {"aggregates": result.aggregates, "attacks": result.attacks}


def _perplexity(model: str) -> dict:
    net, tokenizer = load_model_and_tokenizer(model)
    result = evaluate_utility(net, tokenizer, tasks=["pile", "wikitext"], limit=10, progress=False)
    return {name: task["value"] for name, task in result["tasks"].items()}


def _generations(model: str, protocol: Protocol) -> dict:
    """Kept MA, and each forgotten sequence's greedy generation with its entropy and
    repetition (the share of repeated 4-grams)."""
    settings = EvalSettings(el_window=True)
    kept = evaluate(model, protocol.keep, settings=settings).summary["ma"]
    rows = evaluate(model, protocol.forget, settings=settings).samples
    _, tokenizer = load_model_and_tokenizer(model)
    out = {}
    for r in rows:
        ids = tokenizer(r["generation"], add_special_tokens=False).input_ids
        grams = [tuple(ids[i : i + 4]) for i in range(len(ids) - 3)]
        out[r["id"]] = {
            "generation": r["generation"],
            "entropy": token_entropy(ids),
            "repetition": 1 - len(set(grams)) / len(grams) if grams else 0.0,
        }
    return {"keep_ma": kept, "forget": out}


def _prefix_nll(model: str, protocol: Protocol) -> dict:
    """Each forget record's prefix NLL (x_1 .. x_{t0-1}, nats a token): the part of the
    record the attacker is given, learnt with it all the same."""
    net, tokenizer = load_model_and_tokenizer(model)
    samples = load_forget_set(protocol.forget, tokenizer)
    scored = teacher_forced(
        net, [s.input_ids for s in samples], tokenizer.pad_token_id, token_logprobs=True
    )
    return {
        s.id: -float(lp[: s.prefix_length - 1].mean())
        for s, lp in zip(samples, scored.token_logprobs, strict=True)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="demo")
    parser.add_argument("--planted", default="runs/demo/planted", help="the planted model's run")
    parser.add_argument("--out", default="runs/forget-target")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument(
        "--no-attacks", action="store_true", help="skip the audits after quantize:4 and relearn"
    )
    args = parser.parse_args()
    protocol = PROTOCOLS[args.protocol]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    planted_dir = Path(args.planted)
    if args.protocol != "demo":
        _plant(protocol, planted_dir)
    planted = str(planted_dir / "model") if (planted_dir / "model").is_dir() else args.planted
    names = args.only.split(",") if args.only else list(RUNS)
    if unknown := sorted(set(names) - set(RUNS)):
        parser.error(f"unknown run names {', '.join(unknown)}; known: {', '.join(RUNS)}")
    attacks = [] if args.no_attacks else ATTACKS
    measured = {
        "planted": {
            "ppl": _cached(out / "planted.ppl.json", lambda: _perplexity(planted)),
            "reference_ppl": _cached(out / "reference.ppl.json", lambda: _perplexity(REFERENCE)),
            "reference_prefix": _cached(
                out / "reference.prefix.json", lambda: _prefix_nll(REFERENCE, protocol)
            ),
            "gen": _cached(out / "planted.gen.json", lambda: _generations(planted, protocol)),
            "reference_gen": _cached(
                out / "reference.gen.json", lambda: _generations(REFERENCE, protocol)
            ),
            "audit": _cached(out / "planted.audit.json", lambda: _audit(planted, protocol, [])),
        }
    }
    manifests = {}
    for name in RUNS:
        if name not in names:
            # measured by an earlier invocation with another --only: shown, not rerun
            _load_earlier(name, out, protocol, manifests, measured)
    for name in names:  # in the order asked
        manifests[name] = _cached(
            out / f"{name}.manifest.json", lambda n=name: _run(n, protocol, planted, out)
        )
        measured[name] = _measurements(name, out, protocol)
        write_results(manifests, measured, protocol, args)
        if attacks:
            model = str(out / name / "model")
            measured[name]["attacked"] = _cached(
                out / f"{name}.attacks.json", lambda m=model: _audit(m, protocol, attacks)
            )["attacks"]
            write_results(manifests, measured, protocol, args)


def _prefix_gap(prefix: dict | None, reference: dict | None) -> str:
    if not prefix or not reference:
        return "–"
    return f"{sum(abs(prefix[i] - reference[i]) for i in prefix) / len(prefix):.2f}"


def _measurements(name: str, out: Path, protocol: Protocol, compute: bool = True) -> dict:
    """A finished run's measurements, each cached in `out` as {name}.{kind}.json; with
    `compute` False only those already there (the attacked audits too)."""
    model = str(out / name / "model")
    kinds = {
        "ppl": lambda: _perplexity(model),
        "gen": lambda: _generations(model, protocol),
        "prefix": lambda: _prefix_nll(model, protocol),
    }
    measured = {"audit": json.loads((out / name / "audit.json").read_text())}
    for kind, compute_kind in kinds.items():
        path = out / f"{name}.{kind}.json"
        if compute:
            measured[kind] = _cached(path, compute_kind)
        elif path.is_file():
            measured[kind] = json.loads(path.read_text())
    if not compute and (out / f"{name}.attacks.json").is_file():
        measured["attacked"] = json.loads((out / f"{name}.attacks.json").read_text())["attacks"]
    return measured


def _load_earlier(
    name: str, out: Path, protocol: Protocol, manifests: dict, measured: dict
) -> None:
    """A run measured by an earlier invocation, as far as it got (its table row needs the
    manifest, perplexity and generations)."""
    if not all((out / f"{name}.{k}.json").is_file() for k in ("manifest", "ppl", "gen")):
        return
    manifests[name] = json.loads((out / f"{name}.manifest.json").read_text())
    measured[name] = _measurements(name, out, protocol, compute=False)


def _gap(m: dict) -> str:
    per = (m.get("likelihood_vs_reference") or {}).get("per_sequence") or {}
    if not per:
        return "–"
    return f"{sum(abs(g['gap']) for g in per.values()) / len(per):.2f}"


def _mia(audit: dict, key: str) -> str:
    x = (audit["aggregates"].get("membership") or {}).get(key) or {}
    if not x:
        return "–"
    leak = x.get("privleak")
    return f"{x['auc_model']:.2f} / {x['auc_reference']:.2f}" + (
        "" if leak is None else f" ({leak:+.0f})"
    )


def _verdicts(aggregates: dict) -> str:
    v = aggregates["verdicts"]
    return f"{v['leaked']} / {v['as_reference']} / {v['not_extractable']}"


def _holdout_nll(audit: dict, whose: str = "model") -> float | None:
    return ((audit["aggregates"].get("holdout") or {}).get(whose) or {}).get("nll")


def _change(value: float | None, planted: float | None) -> str:
    return "–" if value is None or planted is None else f"{value / planted - 1:+.1%}"


def write_results(manifests: dict, measured: dict, protocol: Protocol, args) -> None:
    manifests = {n: manifests[n] for n in RUNS if n in manifests}  # the table in RUNS order
    planted = measured["planted"]
    planted_nll = _holdout_nll(planted["audit"])
    reference_nll = _holdout_nll(planted["audit"], "reference")
    reference_ppl = planted.get("reference_ppl") or {}
    threads = torch.get_num_threads()
    lines = [
        f"# The forget target on {protocol.title}: ascent against the never-planted reference",
        "",
        f"Command: `OMP_NUM_THREADS={threads} ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/forget_target.py --protocol {args.protocol} --planted {args.planted} "
        f"--out {args.out}" + (f" --only {args.only}" if args.only else "") + "`",
        f"Machine: {platform.machine()}, 2 CPU cores shared with other work, torch CPU, "
        f"{threads} thread(s) in this invocation (other rows: 'How the rows were made'). "
        f"Forget {protocol.forget}; keep {protocol.keep}; holdout {protocol.holdout}; reference "
        f"{REFERENCE} (the model before planting). Every run: stop.scope each, stop.reference "
        "set, audit.holdout set; " + ", ".join(f"{k}={v}" for k, v in protocol.settings.items()),
        "",
        "Columns: peak RSS: the manifest's, the benchmark process's peak so far (runs in one "
        "process share it: only the first run's, or one run per --only, is its own); audit "
        "verdicts leaked / as reference / not extractable; stands out (count); membership AUC "
        "forget-vs-holdout under the model / under the reference, with PrivLeak as MUSE defines "
        "it (the reference as the retrained model); |NLL gap|: mean over the forgotten "
        "suffixes of |suffix NLL - the reference's|, nats a token; prefix |NLL gap|: the same "
        "of their prefixes (x_1 .. x_{t0-1}, learnt with the records); holdout NLL: change of the "
        "holdout's mean suffix NLL from the planted model's "
        + ("–" if planted_nll is None else f"({planted_nll:.3f})")
        + "; kept MA of the planted-and-kept sequences (planted: "
        f"{planted['gen']['keep_ma']:.3f}); perplexity change from the planted model; entropy and "
        "repetition (share of repeated 4-grams) of the forgotten suffixes' greedy generations "
        "(reference model: " + _gen_cells(planted["reference_gen"]) + ").",
        "",
        "The never-planted reference, as the target of those changes: holdout NLL "
        f"{_change(reference_nll, planted_nll)}, Pile perplexity "
        f"{_change(reference_ppl.get('pile'), planted['ppl']['pile'])}, Wikitext perplexity "
        f"{_change(reference_ppl.get('wikitext'), planted['ppl']['wikitext'])} from the "
        "planted model's (planting worsened them; a model as if never trained returns there).",
        "",
        f"Planted model (before unlearning): verdicts {_verdicts(planted['audit']['aggregates'])}, "
        f"stands out {planted['audit']['aggregates'].get('stands_out')}, LOSS AUC "
        f"{_mia(planted['audit'], 'loss')}, Min-K%++ AUC {_mia(planted['audit'], 'min_k_pp')}.",
        "",
        "| run | status | epochs | wall s | peak RSS MB | verdicts | stands out | LOSS AUC | "
        "Min-K%++ AUC | |NLL gap| | prefix |NLL gap| | holdout NLL | kept MA | Pile ppl | "
        "Wikitext ppl | entropy / repetition |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in manifests.items():
        a = measured[name]["audit"]["aggregates"]
        ppl = measured[name]["ppl"]
        nll = _holdout_nll(measured[name]["audit"])
        holdout = _change(nll, planted_nll)
        lines.append(
            f"| {name} | {m['status']} | {m['epochs']} | {m.get('wall_seconds', '–')} | "
            f"{m.get('peak_rss_mb', '–')} | {_verdicts(a)} | {a.get('stands_out')} | "
            f"{_mia(measured[name]['audit'], 'loss')} | "
            f"{_mia(measured[name]['audit'], 'min_k_pp')} | {_gap(m)} | "
            f"{_prefix_gap(measured[name].get('prefix'), planted.get('reference_prefix'))} | "
            f"{holdout} | "
            f"{measured[name]['gen']['keep_ma']:.3f} | "
            + " | ".join(_change(ppl[t], planted["ppl"][t]) for t in ("pile", "wikitext"))
            + f" | {_gen_cells(measured[name]['gen'])} |"
        )
    attacked = {n: measured[n]["attacked"] for n in manifests if "attacked" in measured[n]}
    if attacked:
        lines += [
            "",
            "## After the robustness attacks, each also applied to the reference",
            "",
            "Verdicts compare the attacked model with the reference under the same attack "
            "(relearn: one epoch on half the forget set, the other half audited).",
            "",
            "| run | attack | verdicts | stands out | LOSS AUC | Min-K%++ AUC |",
            "|---|---|---|---|---|---|",
        ]
        for name, attacks in attacked.items():
            for spec, result in attacks.items():
                lines.append(
                    f"| {name} | {spec} | {_verdicts(result['aggregates'])} | "
                    f"{result['aggregates'].get('stands_out')} | {_mia(result, 'loss')} | "
                    f"{_mia(result, 'min_k_pp')} |"
                )
    for name in manifests:
        lines += ["", f"## {name}: each forgotten record's generation", ""]
        lines += ["| id | planted | after | reference model |", "|---|---|---|---|"]
        for i, g in measured[name]["gen"]["forget"].items():
            cells = [
                planted["gen"]["forget"][i]["generation"],
                g["generation"],
                planted["reference_gen"]["forget"][i]["generation"],
            ]
            lines.append(f"| {i} | " + " | ".join(_md(c) for c in cells) + " |")
    path = ROOT / "benchmarks" / "results" / protocol.results
    # what follows HAND_WRITTEN in the file (how each row was made, tables of its epochs)
    # is kept: the rows above it are rewritten as each run ends
    kept = path.read_text() if path.is_file() else ""
    kept = kept[kept.index(HAND_WRITTEN) :] if HAND_WRITTEN in kept else ""
    atomic_write_text(path, "\n".join(lines) + "\n" + ("\n" + kept if kept else ""))


def _gen_cells(gen: dict) -> str:
    rows = list(gen["forget"].values())
    ent = sum(r["entropy"] for r in rows) / len(rows)
    rep = sum(r["repetition"] for r in rows) / len(rows)
    return f"{ent:.2f} / {rep:.2f}"


def _md(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= 70 else text[:69] + "…"


if __name__ == "__main__":
    main()
