"""`icu-unlearn report` on real (tiny) runs: tables, plots, generations; the forgotten texts
as hashes unless --text asks for them."""

from __future__ import annotations

import html
import json
import shutil

import pytest

from icu_unlearn import load_config, unlearn
from icu_unlearn.models import gpt2_tokenizer
from icu_unlearn.privacy import TEXT_FIELDS
from tests.integration.test_eval_cli import call_cli
from tests.scenario import write_scenario


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("report")
    paths = write_scenario(root, data_dir, gpt2_tokenizer())
    dirs = []
    for method in ("icu", "kumpr"):
        out = root / method
        config = load_config(
            None,
            [
                f"model={paths['base']}",
                f"forget={paths['forget']}",
                f"analogous.pool={paths['pool']}",
                f"probe.retain={paths['retained']}",
                "probe.retain_max_ma_drop=null",  # a random model's MA on them is noise
                f"probe.heldout={paths['heldout']}",
                f"method={method}",
                "prefix_length=20",
                "lr=1e-3",
                "batch_size=2",
                "max_epochs=2",
                "stop.el_max=-1",
                f"out={out}",
            ],
        )
        unlearn(config, progress=False)
        assert not (out / "checkpoints").exists()  # a finished run's are removed
        dirs.append(out)
    return dirs


def _forgotten_texts(run_dir) -> list[str]:
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    texts = [r[k] for r in rows for k in TEXT_FIELDS if r.get(k)]
    return [t for t in texts if len(t.strip()) >= 8]


def test_report_has_the_comparison_curves_and_generations(runs, tmp_path):
    proc = call_cli("report", *map(str, runs), "--out", str(tmp_path / "report.html"), "--text")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "report.html").read_text()
    markdown = (tmp_path / "report.md").read_text()
    assert page.count("data:image/png;base64,") == 1 + len(runs)  # curves + one timeline each
    assert "<script" not in page and "http" not in page.split("<body>")[1]  # self-contained
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert f"<td>{run.name}</td><td>{manifest['method']}</td>" in page
        assert f"| {run.name} | {manifest['method']} | {manifest['status']} |" in markdown
    assert "retained MA" in markdown and "held-out PPL" in markdown
    # with --text the before/after table shows the texts themselves
    first = json.loads((runs[0] / "samples.jsonl").read_text().splitlines()[0])
    assert html.escape(first["true_suffix"]) in page


@pytest.mark.parametrize("flags", [(), ("--redact",)])
def test_a_report_without_text_contains_no_forgotten_text(runs, tmp_path, flags):
    """By default (and with --redact, kept as a no-op for old command lines) every prefix,
    true suffix and generation is a hash: a report is written to be shared."""
    proc = call_cli("report", *map(str, runs), "--out", str(tmp_path / "r.md"), *flags)
    assert proc.returncode == 0, proc.stderr
    outputs = [(tmp_path / "r.html").read_text(), (tmp_path / "r.md").read_text()]
    texts = [t for run in runs for t in _forgotten_texts(run)]
    assert len(texts) >= 4 * 3
    for text in texts:
        for form in {text, html.escape(text), text.replace("\n", "⏎"), text.strip()[:24]}:
            assert all(form not in out for out in outputs), form
    assert "[redacted sha256:" in outputs[0] and "[redacted sha256:" in outputs[1]
    assert all("report --text" in out for out in outputs)  # how to see them


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capfd):
    proc = call_cli("report", str(tmp_path), "--out", str(tmp_path / "r.html"), capfd=capfd)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.html").exists()


def test_report_shows_a_later_audit_of_the_runs_model_beside_the_runs_own(runs, tmp_path):
    """`audit --model RUN/model --out RUN/audit-later` after the run: `report RUN` shows
    that audit (its attacks too) beside the run's own, in the words `audit` printed."""
    from icu_unlearn.audit.table import summary_line

    run = tmp_path / runs[0].name
    shutil.copytree(runs[0], run)  # the run's own audit.json keeps its older time
    manifest = json.loads((run / "manifest.json").read_text())
    proc = call_cli(
        "audit", "--model", str(run / "model"), "--forget", manifest["config"]["forget"],
        "--prefix-length", "20", "--attack", "quantize:8", "--out", str(run / "audit-later"),
    )  # fmt: skip
    assert proc.returncode in (0, 3), proc.stderr
    later = json.loads((run / "audit-later" / "audit.json").read_text())
    summary = summary_line(later["aggregates"])
    attacked = summary_line(later["attacks"]["quantize:8"]["aggregates"])
    assert summary in proc.stdout.splitlines() and f"after quantize:8: {attacked}" in proc.stdout

    proc = call_cli("report", str(run), "--out", str(tmp_path / "r.md"))
    assert proc.returncode == 0, proc.stderr
    shown = f"latest audit (audit-later/audit.json, attacks quantize:8): {summary}"
    assert f"{run.name}: {shown}" in proc.stdout.splitlines()
    assert f"{run.name}:   after quantize:8: {attacked}" in proc.stdout.splitlines()
    own = manifest["audit"]["summary"]  # what `run` printed for the same model
    assert f"{run.name}: audit (the run's own, audit.json, no attacks): {own}" in proc.stdout
    markdown = (tmp_path / "r.md").read_text()
    assert f"- {shown}" in markdown and "| audit | latest audit |" in markdown
    # eval of the same model says the same
    proc = call_cli(
        "eval", "--model", str(run / "model"), "--forget", manifest["config"]["forget"],
        "--prefix-length", "20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"latest audit of this model ({run}/audit-later/" in proc.stdout
    assert proc.stdout.splitlines()[-1].endswith(f"attacks quantize:8): {summary}")
    # the end-state table: each sequence's verdict under the later audit in its last column
    table = markdown.split("every forget sequence at the end")[1].split("\n## ")[0]
    cells = [line.strip("| ").split(" | ") for line in table.splitlines() if line[:3] == "| 1"]
    later_verdicts = {s["id"]: s["verdict"] for s in later["sequences"]}
    assert {c[0]: c[-1].split(" ")[0] for c in cells} == later_verdicts
