"""--redact: no file a run or its report writes contains the forgotten text (prefixes,
suffixes, the model's generations of them); hashes stand in for it."""

from __future__ import annotations

import html
import json

from tests.integration.test_eval_cli import run_cli


def _run(scenario, out, *extra):
    settings = [
        f"model={scenario['planted_model']}",
        f"forget={scenario['forget']}",
        f"analogous.pool={scenario['pool']}",
        "prefix_length=20",
        "lr=2e-4",
        "batch_size=2",
        "max_epochs=2",
    ]
    proc = run_cli("run", *(a for s in settings for a in ("--set", s)), "--out", str(out), *extra)
    assert proc.returncode == 3, proc.stderr  # 3: two epochs are too few to forget them all
    return proc


def _forms(text: str) -> set[str]:
    """How a text can appear in a file: raw, JSON-escaped, HTML-escaped; and its head."""
    text = text.strip()
    forms = {text, json.dumps(text, ensure_ascii=False)[1:-1], html.escape(text)}
    return {f for f in forms if f} | {text[:24]}


def test_redacted_run_and_report_never_contain_forgotten_text(scenario, tmp_path):
    plain = tmp_path / "plain"
    _run(scenario, plain)
    rows = [json.loads(x) for x in (plain / "samples.jsonl").read_text().splitlines()]
    texts = {r[k] for r in rows for k in ("prefix", "reference", "generation") if r.get(k)}
    texts = {t for t in texts if len(t.strip()) >= 12}
    assert len(texts) >= 4 * 2  # every prefix and suffix at least

    redacted = tmp_path / "redacted"
    proc = _run(scenario, redacted, "--redact", "--keep-checkpoints")
    report = run_cli("report", str(redacted), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    files = [p for p in redacted.rglob("*") if p.is_file()]
    files += [tmp_path / "report.html", tmp_path / "report.md"]
    assert any(p.name == "state.json" for p in files)  # checkpoints are searched too
    checked = 0
    for path in files:
        data = path.read_bytes()
        for text in texts:
            for form in _forms(text):
                assert form.encode() not in data, (path, form)
                checked += 1
    assert checked > 100
    for text in texts:
        assert all(form not in proc.stdout + proc.stderr for form in _forms(text))
    samples = (redacted / "samples.jsonl").read_text()
    assert "[redacted sha256:" in samples and '"sha256": ' in samples  # hashes kept for audit
