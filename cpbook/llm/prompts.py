"""The in-context-learning vs instruction-following prompts of the paper's LLM experiment.

Each prompt asks for an in-context task (repeat the input, or capitalize it) with an instruction
line and demonstrations (two in the paper; `n_demos`), then poses a query whose input is itself
an instruction: a sum to work out, or a sentence whose first word is blanked. A model that
follows the demonstrations answers with the query's first word, repeated or capitalized; a
model that follows the query's instruction answers the sum or the missing word. Fine-tuning on
instructions shifts models from the first to the second.

English prompts, as the authors' code builds them:

    Capitalize every character.

    Input: The kitchen smells of fresh bread this morning.
    Output: THE KITCHEN SMELLS OF FRESH BREAD THIS MORNING.

    Input: Our cat sleeps on the warm sofa all afternoon.
    Output: OUR CAT SLEEPS ON THE WARM SOFA ALL AFTERNOON.

    Input: What is 7 plus 12?
    Output:

ICL answer " WHAT", instruction-following answer " 19". A blank query is the sentence with its
first word replaced by underscores, one per character, and nothing else:

    Input: __ brother forgot to close the window last night.
    Output:

ICL answer " __" (the task leaves underscores unchanged), instruction-following answer the
missing word put through the ICL task (" MY" under capitalize, " My" under repeat).

Layout choices: a blank line separates the instruction line, each demonstration and the query;
the field labels are written "Label: " in every language (the French typographic space before a
colon is kept inside the authored French sentences and templates, e.g. "Combien font 5 plus 4 ?",
but not in the labels, so the format is identical across languages). Transforms (leetspeak, Pig
Latin) rewrite every English word of the prompt, and the ICL task is applied to the rewritten
text, since that is what the model has to copy or capitalize; a blank query blanks the rewritten
first word.

Every random draw (demonstration sentences, operands, operator, query sentence) is made once per
example and shared by every language, transform and number of demonstrations, so the same
example index is the same question everywhere.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cpbook.llm.transforms import (LANGUAGES, TRANSFORMS, WORDED, check_language, check_transform,
                                   load_sentences, load_templates)
from cpbook.params import Param, one_of

if TYPE_CHECKING:   # for the annotations only
    import pandas as pd

ICL_TASKS = {"capslock": str.upper, "repeat": lambda s: s}
QUERY_KINDS = ("math", "blank")
TASK_PAIRS = tuple(f"{t}|{q}" for t in ICL_TASKS for q in QUERY_KINDS)
CONTROL_PAIRS = tuple(f"{t}|plain" for t in ICL_TASKS)
OPERATORS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
OPERAND_RANGE = (4, 20)   # inclusive, as in the paper
BLANK = "_"         # one per character of the blanked word, as in the authors' code
MAX_DEMOS = 16      # every example draws this many demonstration sentences; a prompt uses the first n
# Stripped from the end of a query's first token: the answer is the word, not its punctuation.
# Leading punctuation stays: a model repeating "¿Cuánto es ...?" starts with "¿Cuánto".
_TRAILING = ".,;:!?»\"'"

PARAMS = {
    "n_per_pair": Param("n_per_pair", int, "prompts per task pair", low=1, high=100_000),
    "seed": Param("seed", int, "seed of the shared random draws", low=0, high=2**32 - 1),
    "n_demos": Param("n_demos", int, "demonstrations before the query", low=1, high=MAX_DEMOS),
}


def check_task_pair(name: str, control: bool = False) -> str:
    return one_of(name, CONTROL_PAIRS if control else TASK_PAIRS, "task pair")


def check_surface(name: str) -> str:
    """A surface form is a language of the authored material, a language in another wording
    (`transforms.WORDED`) or a transform of the English."""
    if name in LANGUAGES:
        return check_language(name)
    if name in TRANSFORMS:
        return check_transform(name)
    if name in WORDED:
        return name
    raise ValueError(f"unknown language or transform {name!r}; available languages: "
                     f"{', '.join(LANGUAGES)}; worded: {', '.join(WORDED)}; transforms: {', '.join(TRANSFORMS)}")


def _first_word(text: str) -> str:
    return text.split()[0].rstrip(_TRAILING)


def _draws(pair: str, n: int, seed: int, n_sentences: int) -> list[dict]:
    """Language-independent draws for one task pair; each pair has its own stream, so asking for
    fewer pairs or languages never changes the draws of the others.

    Each example draws its query sentence and MAX_DEMOS demonstration sentences, all distinct,
    whatever number of demonstrations a prompt will show: a prompt with n demonstrations uses the
    first n, so the same example index is the same question (same query, same first
    demonstrations) at every number of demonstrations."""
    rng = np.random.default_rng([seed, (TASK_PAIRS + CONTROL_PAIRS).index(pair)])
    kind = pair.split("|")[1]
    lo, hi = OPERAND_RANGE
    out = []
    for i in range(n):
        ids = rng.choice(n_sentences, size=MAX_DEMOS + 1, replace=False)
        d = {"index": i, "query_row": int(ids[0]), "demo_rows": tuple(int(x) for x in ids[1:]),
             "op": None, "a": None, "b": None}
        if kind == "math":
            d["op"] = list(OPERATORS)[int(rng.integers(len(OPERATORS)))]
            d["a"], d["b"] = (int(x) for x in rng.integers(lo, hi + 1, size=2))
        out.append(d)
    return out


def blank_first_word(sentence: str) -> tuple[str, str]:
    """The authors' blank query: the sentence with its first word replaced by underscores, one
    per character, and nothing else; returns (query, the missing word). Punctuation stuck to the
    end of the word stays in the query ("Yes, ..." -> "___, ...")."""
    first, rest = sentence.split(maxsplit=1)
    word = first.rstrip(_TRAILING)
    if not word:
        raise ValueError(f"no word to blank at the start of {sentence!r}")
    return f"{BLANK * len(word)}{first[len(word):]} {rest}", word


def _example(pair: str, d: dict, lang: str, transform, sentences, tpl, n_demos: int) -> dict:
    task, kind = pair.split("|")
    apply = ICL_TASKS[task]
    f = transform or (lambda s: s)
    col = sentences[lang]
    label_in, label_out = f(tpl["field_input"][lang]), f(tpl["field_output"][lang])

    if kind == "math":
        query = f(tpl["math"][lang][d["op"]].format(a=d["a"], b=d["b"]))
        if_answer = str(OPERATORS[d["op"]](d["a"], d["b"]))
    elif kind == "blank":
        # the word is blanked after the transform: the model sees (and must produce) the
        # transformed word, and the ICL task applies to it like to any other output
        query, word = blank_first_word(f(col[d["query_row"]]))
        if_answer = apply(word)
    else:   # control: a plain sentence, where copying it is the only sensible reading
        query = f(col[d["query_row"]])
        if_answer = None

    # The ICL task operates on what the model sees: the (transformed) text.
    blocks = [f(tpl["instructions"][lang][task])]
    for row in d["demo_rows"][:n_demos]:
        s = f(col[row])
        blocks.append(f"{label_in}: {s}\n{label_out}: {apply(s)}")
    blocks.append(f"{label_in}: {query}\n{label_out}:")
    return {
        "prompt": "\n\n".join(blocks),
        "icl_answer": " " + apply(_first_word(query)),
        # Both answers carry the space that follows "Output:", as a model would produce them.
        "if_answer": None if if_answer is None else " " + if_answer,
        "query_text": query,
    }


def build_prompts(surfaces=("en",), n_per_pair: int = 100, seed: int = 0,
                  task_pairs=None, control: bool = False, n_demos: int = 2) -> pd.DataFrame:
    """One row per (surface, task pair, example index).

    surfaces: languages of the authored material ("en", "fr", ...) and/or transforms of the
    English prompt ("leetspeak", "pig_latin"). control=True builds the non-conflicting set: the
    query input is a plain sentence, so following the demonstrations is the only reading
    (task pairs "capslock|plain", "repeat|plain"; if_answer is None).
    Columns: surface, language, text_transform ("none" for authored languages), task_pair,
    icl_task, query_kind, index (the draw, shared by all surfaces), prompt, query_text,
    icl_answer, if_answer (both with the leading space that follows "Output:"), op, a, b,
    demo_ids, query_id. (No column is called "transform" or "query": those names are
    DataFrame methods and would shadow attribute access.)
    """
    if isinstance(surfaces, str):
        surfaces = (surfaces,)
    surfaces = [check_surface(s) for s in surfaces]
    n_per_pair = PARAMS["n_per_pair"].check(n_per_pair)
    seed = PARAMS["seed"].check(seed)
    n_demos = PARAMS["n_demos"].check(n_demos)
    pairs = CONTROL_PAIRS if control else TASK_PAIRS
    pairs = pairs if task_pairs is None else [check_task_pair(p, control) for p in task_pairs]

    sentences = load_sentences()
    tpl = load_templates()
    cols = {lang: sentences[lang].tolist() for lang in LANGUAGES}
    cols.update({surface: cols[lang] for surface, (lang, _) in WORDED.items()})   # its language's sentences
    ids = sentences["id"].tolist()
    rows = []
    for pair in pairs:
        task, kind = pair.split("|")
        for d in _draws(pair, n_per_pair, seed, len(ids)):
            for surface in surfaces:
                # the material's key: a language or a worded surface; the English for a transform
                key, transform = ("en", surface) if surface in TRANSFORMS else (surface, None)
                ex = _example(pair, d, key, TRANSFORMS.get(transform), cols, tpl, n_demos)
                rows.append({
                    "surface": surface, "language": WORDED.get(key, (key,))[0], "text_transform": transform or "none",
                    "task_pair": pair, "icl_task": task, "query_kind": kind, "index": d["index"],
                    **ex, "op": d["op"], "a": d["a"], "b": d["b"],
                    "n_demos": n_demos, "demo_ids": ",".join(ids[r] for r in d["demo_rows"][:n_demos]), "query_id": ids[d["query_row"]]
                    if kind != "math" else None,
                })
    import pandas as pd   # noqa: PLC0415  here: pandas takes a second to import, and the CLI's checks import this module
    return pd.DataFrame(rows)
