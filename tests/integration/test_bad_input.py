"""The bad-input matrix, through the real `icu-unlearn run`: each case gives one line that
names the problem and the fix, exit code 2, no traceback, nothing written, input untouched.
(An output directory holding another run: test_run_engine; eval's own cases: test_eval_cli.)"""

from __future__ import annotations

import hashlib
import json

import pytest
from transformers import ViTConfig

from icu_unlearn.models import gpt2_tokenizer
from tests.conftest import tiny_llama
from tests.integration.test_eval_cli import call_cli, run_cli
from tests.scenario import write_scenario


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir):
    return write_scenario(tmp_path_factory.mktemp("bad-input"), data_dir, gpt2_tokenizer())


def _tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _write(path, text):
    path.write_text(text)
    return str(path)


def _jsonl(path, rows):
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _case(name, base, tmp):
    """(config YAML text, extra --set overrides, the message the error must contain)."""
    good = f"model: {base['base']}\nforget: {base['forget']}\nprefix_length: 20\n"
    good += f"analogous:\n  pool: {base['pool']}\n"
    ids = {"prefix_ids": [464, 2068, 7586, 21831], "suffix_ids": [18045, 625, 262] * 5}
    if name == "malformed yaml":
        return "model: [unclosed\n", [], "is not valid YAML at line"
    if name == "unknown key":
        return good + "alhpa: 0.5\n", [], "unknown config key alhpa; valid keys:"
    if name == "mistyped nested key":
        return good, ["refinement.rul=any"], "unknown config key refinement.rul"
    if name == "mistyped value":
        return good + "lr: fast\n", [], "lr must be float"
    if name == "missing forget file":
        return good, [f"forget={tmp / 'nope.jsonl'}"], "does not exist"
    if name == "empty forget file":
        return good, [f"forget={_write(tmp / 'e.jsonl', '')}"], "is empty"
    if name == "duplicate ids":
        path = _jsonl(tmp / "d.jsonl", [{"id": "a", **ids}, {"id": "a", **ids}])
        return good, [f"forget={path}"], "has the id 'a' twice"
    if name == "wrong jsonl field":
        path = _jsonl(tmp / "w.jsonl", [{"id": "a", "prefx": "x", "suffix": "y"}])
        return good, [f"forget={path}"], "missing field"
    if name == "wrong csv columns":
        path = _write(tmp / "w.csv", "id,text\n1,hello there\n")
        return good, [f"forget={path}"], "doc_id,corpus,text"
    if name == "token id outside vocabulary":
        path = _jsonl(tmp / "v.jsonl", [{"id": "a", "prefix_ids": [1, 2], "suffix_ids": [10**6]}])
        return good, [f"forget={path}"], "outside"
    if name == "text too short to split":
        path = _jsonl(tmp / "p.jsonl", [{"id": "a", "text": "hello"}])
        return good, [f"forget={path}", "prefix_length=50"], "it needs at least 2"
    if name == "shorter than n for EL":
        path = _jsonl(tmp / "n.jsonl", [{"id": "a", "prefix_ids": [1, 2], "suffix_ids": [3, 4]}])
        return good, [f"forget={path}"], "EL_10"
    if name == "not a causal LM":
        folder = tmp / "vit"
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
            folder
        )
        return good, [f"model={folder}"], "not a causal language model"
    if name == "tokenizer does not match the model":
        folder = tmp / "mismatch"
        tiny_llama(vocab_size=64).save_pretrained(folder)
        gpt2_tokenizer().save_pretrained(folder)
        return good, [f"model={folder}"], "tokenizer"
    if name == "already forgotten":  # the random base model never memorized these
        return good, [], "already forgotten"
    if name == "unknown method":
        return good, ["method=magic"], "unknown method 'magic'; choose from icu"
    if name == "bad batch size":
        return good, ["batch_size=most"], "batch_size must be a number or 'all'"
    if name == "unwritable output":
        return good, [], "cannot write to /proc"
    raise AssertionError(name)


CASES = [
    "malformed yaml",
    "unknown key",
    "mistyped nested key",
    "mistyped value",
    "missing forget file",
    "empty forget file",
    "duplicate ids",
    "wrong jsonl field",
    "wrong csv columns",
    "token id outside vocabulary",
    "text too short to split",
    "shorter than n for EL",
    "not a causal LM",
    "tokenizer does not match the model",
    "already forgotten",
    "unknown method",
    "bad batch size",
    "unwritable output",
]


# Through a process of its own, as a shell runs `icu-unlearn` (what reaches the shell: the
# exit status, every line on stderr): one case found while reading the config, one while
# scoring the model. The others call the same entry point in the test's process, its
# stderr captured at the file descriptor (`call_cli`): the same code and output, without
# a new interpreter importing torch and transformers for each (about 10 s a case here).
IN_A_PROCESS = {"malformed yaml", "already forgotten"}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, base, tmp_path, capfd):
    text, overrides, message = _case(name, base, tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(text)
    out = tmp_path / "out" if name != "unwritable output" else "/proc/icu-unlearn-out"
    before = _tree_digest(base["base"]), config.read_text()
    args = [a for o in overrides for a in ("--set", o)]
    argv = ("run", str(config), *args, "--out", str(out))
    proc = run_cli(*argv) if name in IN_A_PROCESS else call_cli(*argv, capfd=capfd)
    code, stderr = proc.returncode, proc.stderr
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icu-unlearn: error: "), stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in stderr
    if name != "unwritable output":
        assert not (tmp_path / "out").exists()
    assert (_tree_digest(base["base"]), config.read_text()) == before


def test_a_bad_config_is_answered_before_torch_is_imported(tmp_path):
    """`run` reads and checks its config first: a mistyped key is one line in about a
    second, not after the seconds that importing torch and transformers takes."""
    import subprocess
    import sys

    from tests.integration.test_eval_cli import ROOT

    config = tmp_path / "run.yaml"
    config.write_text("model: m\nforget: f\nalhpa: 0.5\n")
    script = (
        "import sys\nfrom icu_unlearn.cli import main\n"
        f"code = main(['run', {str(config)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert "unknown config key alhpa" in proc.stderr
