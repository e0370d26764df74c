"""`icu-unlearn eval` through the real command line, on a tiny model and on the packaged one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from unittest import mock

import pytest

from icu_unlearn.cli import main
from icu_unlearn.models import gpt2_tokenizer, prepare_tokenizer
from tests.conftest import ROOT, tiny_gpt_neo

# What third-party libraries printed on every command before they were quieted:
# bitsandbytes (imported by peft) and DeepSpeed (imported by save_pretrained, via accelerate);
# and any Python warning ("FutureWarning: ...").
THIRD_PARTY = ("bitsandbytes", "kernels-community", "DeepSpeed", "real_accelerator", "Warning:")


def third_party_lines(proc: subprocess.CompletedProcess) -> list[str]:
    lines = (proc.stdout + proc.stderr).replace("\r", "\n").splitlines()
    return [line for line in lines if any(word in line for word in THIRD_PARTY)]


def run_cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`icu-unlearn ARGS` in a process of its own, as a shell runs it: what a test of the
    exit status, signals, faults or every line a library prints needs."""
    env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "icu_unlearn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def call_cli(*args: str, env: dict | None = None, capfd=None) -> subprocess.CompletedProcess:
    """`icu-unlearn ARGS` through the same entry point in the test's process: for tests of
    what a command writes and returns, without a new interpreter importing torch and
    transformers (5-10 s a call here). Its output is what it prints to sys.stdout and
    sys.stderr, or, given pytest's `capfd`, everything written to file descriptors 1 and
    2 meanwhile (a library's handler made earlier included): for tests of every line."""
    if capfd is not None:
        capfd.readouterr()  # what came before is not this command's
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, env or {}))
        if capfd is None:
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
    if capfd is not None:
        captured = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A GPT-Neo with GPT-2's tokenizer (which has no pad token), saved like any checkpoint."""
    path = tmp_path_factory.mktemp("tiny-gpt-neo")
    gpt2 = gpt2_tokenizer()
    tiny_gpt_neo(vocab_size=len(gpt2)).save_pretrained(path)
    gpt2.save_pretrained(path)
    return path


@pytest.fixture()
def forget_file(tmp_path):
    path = tmp_path / "forget.jsonl"
    rows = [
        {
            "id": "phone",
            "prefix": "You can reach Jane Doe at",
            "suffix": " 555-0134, extension 12.",
        },
        {"id": "mail", "text": "Send the signed contract to jane.doe@example.org by Friday noon."},
        {"id": "ids", "prefix_ids": [464, 2068, 7586], "suffix_ids": [21831, 18045, 625, 262]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_writes_per_sample_metrics_and_summary(tiny_model_dir, forget_file, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--forget",
        str(forget_file),
        "--out",
        str(out),
        "--el-n",
        "2",
        "--prefix-length",
        "5",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (out / "memorization.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["phone", "mail", "ids"]
    for r in rows:
        for key in ("el_2", "ma", "bertscore_f1", "bleu", "entropy"):
            assert 0.0 <= r[key] <= (10.0 if key == "entropy" else 1.0 + 1e-6), key
        assert isinstance(r["generation"], str)
    assert rows[1]["prefix_tokens"] == 5
    summary = json.loads((out / "summary.json").read_text())
    for key in ("el_2", "ma", "bertscore_f1", "bleu", "entropy"):
        assert summary[key] == pytest.approx(sum(r[key] for r in rows) / 3)
    assert summary["num_samples"] == 3 and summary["settings"]["el_n"] == 2
    assert "mean" in proc.stdout and "phone" in proc.stdout
    # per sample: how many tokens prompt the model and how many are tested
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "prompt", "tested"]
    mail = next(line.split() for line in lines if line.startswith("mail "))
    assert mail[1:3] == [str(rows[1]["prefix_tokens"]), str(rows[1]["suffix_tokens"])]
    # and the true suffix beside the greedy continuation
    texts = lines[next(i for i, x in enumerate(lines) if "true suffix" in x) :]
    assert texts[0].split()[0] == "id" and "greedy continuation" in texts[0]
    phone = next(line for line in texts if line.startswith("phone "))
    assert "555-0134, extension 12." in phone
    assert third_party_lines(proc) == []


def test_help_does_not_load_torch():
    """`icu-unlearn --help` builds the commands' names and help lines only: no torch, no
    transformers (seconds to import)."""
    code = (
        "import sys\n"
        "from icu_unlearn.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    for command in ("eval", "run", "memorize", "demo", "utility", "audit", "report", "data"):
        assert f"    {command} " in proc.stdout


def test_a_missing_local_model_folder_is_named(tmp_path):
    """ "tests/no-such-model" could be a hub id (org/name), but tests/ is a folder here: a
    missing folder, said so, without asking the hub."""
    proc = run_cli("eval", "--model", "tests/no-such-model", "--forget", "lm-extraction:ids=1")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "icu-unlearn: error: model folder 'tests/no-such-model' does not exist; give a folder "
        "written by save_pretrained, a hub id, or one of: smollm2-135m"
    ]


def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "case",
    ["missing field", "empty file", "text too short to split", "unknown doc_id", "no model"],
)
def test_bad_input_exits_2_with_one_line_and_no_files(
    case, tiny_model_dir, tmp_path, data_dir, capfd
):
    model = str(tiny_model_dir)
    forget = {
        "missing field": lambda: _bad(tmp_path, "a.jsonl", '{"id": 1, "prefix": "x"}\n'),
        "empty file": lambda: _bad(tmp_path, "b.jsonl", ""),
        "text too short to split": lambda: _bad(tmp_path, "c.jsonl", '{"id": 1, "text": "hi"}\n'),
        "unknown doc_id": lambda: "lm-extraction:ids=99999",
        "no model": lambda: "lm-extraction:ids=1",
    }[case]()
    if case == "no model":
        model = str(tmp_path / "no-such-model")
    out = tmp_path / "out"
    args = ("eval", "--model", model, "--forget", forget, "--out", str(out), "--el-n", "2")
    proc = call_cli(*args, capfd=capfd)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icu-unlearn: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_data_list_shows_the_mirror(data_dir):
    proc = call_cli("data", "list", "--data-dir", str(data_dir))
    assert proc.returncode == 0
    line = next(x for x in proc.stdout.splitlines() if "lm_extraction_128_0.csv" in x)
    assert line.split()[1] == "yes"


def test_data_fetch_offline_is_one_line(tmp_path):
    env_proxy = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "icu_unlearn", "data", "fetch", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=os.environ | env_proxy,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot download" in proc.stderr


def test_hub_style_loading_from_a_local_folder(tiny_model_dir):
    """The loader's path for hub ids is from_pretrained; a local folder exercises it offline."""
    from icu_unlearn.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "left"
    assert not model.training


@pytest.mark.slow
def test_eval_on_the_packaged_model(tmp_path, data_dir):
    out = tmp_path / "eval"
    proc = call_cli(
        "eval",
        "--model",
        "smollm2-135m",
        "--forget",
        "lm-extraction:ids=5",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads((out / "memorization.jsonl").read_text())
    assert row["id"] == "5" and 0 <= row["el_10"] <= 1 and 0 <= row["ma"] <= 1
    assert row["generation"]


def test_prepare_tokenizer_sets_pad():
    tok = prepare_tokenizer(gpt2_tokenizer())
    assert tok.pad_token_id == tok.eos_token_id


@pytest.mark.slow
def test_quick_demo_on_the_packaged_model(tmp_path, data_dir):
    """The main job, reduced: plant two sequences into SmolLM2-135M, forget one with ICU,
    check the other and ordinary text, write the report. Minutes on 2 CPU cores."""
    out = tmp_path / "demo"
    proc = run_cli("demo", "--quick", "--out", str(out), timeout=1200)
    # 3: four epochs may end with the sequence still extractable, and the demo says so
    assert proc.returncode in (0, 3), proc.stderr
    for step in ("== 1. plant", "== 2.", "== 3. ICU", "== 4.", "== 5. summary"):
        assert step in proc.stdout
    summary = json.loads((out / "demo.json").read_text())
    # each step's time, printed in its banner and summed to the demo's (set-up before step 1)
    assert list(summary["step_seconds"]) == ["1", "2", "3", "4", "5"]
    assert 0 < sum(summary["step_seconds"].values()) <= summary["seconds"]
    assert summary["forget_ma"][0] >= 0.95  # planted: extractable before
    assert summary["forget_el10"][1] < summary["forget_el10"][0]  # ICU lowered it
    assert summary["forget_ma"][1] < summary["forget_ma"][0]
    assert (out / "report.html").is_file() and (out / "icu" / "model" / "config.json").is_file()
    manifest = json.loads((out / "icu" / "manifest.json").read_text())
    assert manifest["status"] in ("criteria_met", "incomplete")
    # the kept sequence is held by the retain term and watched every epoch
    assert list(manifest["retained"]["per_record"]) == ["2831"]
    assert manifest["retained"]["damaged"] == {}
    assert (proc.returncode == 3) == (manifest["status"] == "incomplete")
    assert "audit of the forget set" in proc.stdout and manifest["audit"]["verdicts"]
    assert third_party_lines(proc) == []  # no bitsandbytes, DeepSpeed or kernels notice


def test_eval_with_a_judge_scores_every_generation(tiny_model_dir, forget_file, tmp_path):
    """The paper's GPT evaluation through `eval --judge-url`, against a stub endpoint;
    the key travels in the header only, never into the output files."""
    from tests.unit.test_judge import _chat, _Stub

    server = _Stub([_chat("Different and fluent.\nFinal score: 8")])
    key = "sk-never-in-files-123"
    env = {"ICU_JUDGE_KEY": key, "no_proxy": "127.0.0.1", "http_proxy": "", "HTTP_PROXY": ""}
    try:
        proc = run_cli(
            "eval",
            "--model",
            str(tiny_model_dir),
            "--forget",
            str(forget_file),
            "--el-n",
            "2",
            "--prefix-length",
            "5",
            "--out",
            str(tmp_path / "out"),
            "--judge-url",
            server.url,
            "--judge-model",
            "stub",
            "--judge-key-env",
            "ICU_JUDGE_KEY",
            env=env,
        )
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    rows = [
        json.loads(x) for x in (tmp_path / "out" / "memorization.jsonl").read_text().splitlines()
    ]
    assert [r["judge_score"] for r in rows] == [8.0] * len(rows) == [8.0] * len(server.requests)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["judge"] == 8.0
    assert all(r["headers"]["Authorization"] == f"Bearer {key}" for r in server.requests)
    for path in (tmp_path / "out").iterdir():
        assert key not in path.read_text()
    assert key not in proc.stdout + proc.stderr


def test_utility_writes_after_each_task_and_resumes(tiny_model_dir, tmp_path, data_dir):
    out = tmp_path / "utility"
    args = ["utility", "--model", str(tiny_model_dir), "--tasks", "pile,wikitext", "--limit", "2"]
    proc = call_cli(*args, "--out", str(out), "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    whole = json.loads((out / "utility.json").read_text())
    assert whole["complete"] and whole["model"] == str(tiny_model_dir)
    # an interrupted run: pile written, wikitext not yet
    partial = whole | {"complete": False, "tasks": {"pile": whole["tasks"]["pile"]}}
    (out / "utility.json").write_text(json.dumps(partial))
    proc = call_cli(*args, "--out", str(out), "--data-dir", str(data_dir), "--resume")
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads((out / "utility.json").read_text())
    assert resumed["complete"] and resumed["tasks"]["pile"] == whole["tasks"]["pile"]
    assert resumed["tasks"]["wikitext"]["value"] == whole["tasks"]["wikitext"]["value"]
    # another limit is another run: refused on one line
    other = [*args[:-1], "3", "--out", str(out), "--data-dir", str(data_dir), "--resume"]
    proc = run_cli(*other)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"icu-unlearn: error: {out / 'utility.json'} was scored with another --limit; "
        "resume with the same settings"
    )


def test_the_demo_forgets_the_first_half_and_refuses_a_count_that_empties_one():
    from icu_unlearn.demo import halves
    from icu_unlearn.errors import UsageError

    assert halves(list("abcdefgh"), None) == (list("abcd"), list("efgh"))
    assert halves(list("abc"), 2) == (["a", "b"], ["c"])
    for count in (3, -1):
        with pytest.raises(UsageError, match="between 1 and 2 for 3 planted"):
            halves(list("abc"), count)
