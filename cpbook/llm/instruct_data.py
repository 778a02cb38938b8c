"""English-only instruction data, generated here, for instruction-tuning the Gemma base model.

The paper's instruction-tuned models (Alpaca, Vicuna, OPT-IML) learned from large English
instruction sets. We cannot download one, so this module writes a small one from rules: every
example is a single instruction (a sum to work out, a blank to fill, words to count, ...) with its
answer, in one of a few common prompt formats. There are no demonstrations in it: what tuning
teaches is "when the input is an instruction, carry it out".

The sentences are built from the word lists below, not taken from `data/sentences.tsv`, so the
chapter's ICL prompts never reuse a training sentence. Nor does any example share a template with
the chapter's prompts (`cpbook.llm.contamination`, checked by the test suite): no "Input:" /
"Output:" format, none of the chapter's arithmetic questions ("What is A plus B?"), no
underscore blank. A first version had all three (201, 20 and 144 of the 800 examples tuned on),
so the sibling was taught the test's own format: English's larger shift was partly built in.
Chapter 5's tuned model learns from English alone: the language gap it measures is the one
between the tuning language and the others. Chapter 8 tests the prediction that follows: the
same instructions in English, French and Spanish (`MULTILINGUAL`; the French and Spanish word
lists and phrasings are authored in `data/instructions_fr_es.json`, entry for entry like the
English) should spread the suppression to French and Spanish.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cpbook import cache
from cpbook.llm.prompts import OPERATORS

TRANSLATIONS = Path(__file__).resolve().parents[1] / "data" / "instructions_fr_es.json"

SUBJECTS = ["The old farmer", "My sister", "A small dog", "Our teacher", "The young pilot",
            "His grandmother", "The tired nurse", "A quiet student", "Their neighbour", "The baker",
            "My best friend", "The new manager", "A curious child", "The driver", "Your brother",
            "The museum guide", "A local artist", "The gardener", "Her uncle", "The night guard"]
PREDICATES = ["carries a basket", "reads the newspaper", "paints the fence", "waits for the bus",
              "cooks a large dinner", "repairs the bicycle", "walks along the river",
              "writes a long letter", "sells fresh apples", "opens the window", "feeds the ducks",
              "cleans the kitchen", "plays the piano", "builds a wooden shelf", "visits the library",
              "counts the coins", "sings an old song", "plants tomatoes", "finds a lost key",
              "drinks a cup of tea"]
ENDINGS = ["every morning", "after lunch", "in the village", "before dinner", "on Sundays",
           "near the station", "at the market", "in the rain", "during the holidays",
           "behind the school", "with great care", "late at night"]

MATH_PHRASES = {
    "plus": ["Add {a} and {b}.", "Compute {a} + {b}.", "What is the sum of {a} and {b}?"],
    "minus": ["Subtract {b} from {a}.", "Compute {a} - {b}.",
              "What do you get when you take {b} away from {a}?"],
    "times": ["Multiply {a} by {b}.", "Compute {a} * {b}.", "What is the product of {a} and {b}?"],
}

# (template, answer-leading text): the answer follows a colon with a space, or a new line.
FORMATS = {
    "question_answer": ("Question: {q}\nAnswer:", " "),
    "alpaca": ("### Instruction:\n{q}\n\n### Response:\n", ""),
    "plain": ("{q}\n", ""),
}
# Short answers (a number, a word) and long ones (the input sentence rewritten). A first version
# had short answers only, and the tuned model learned to answer every prompt with one word,
# even "repeat this sentence": the long kinds keep the skill of writing out a rewritten input.
KINDS = ("math", "blank_word", "count_words", "last_word", "larger", "compare",
         "repeat", "upper", "lower", "reverse_words")
# The gap a blank leaves: not the chapter's underscores, one per letter of the missing word.
BLANK = "[...]"
# Bump when the generated text changes: it is part of the tuned model's cache key.
DATA_VERSION = 3

# Version 2 had, first in each list, templates of chapter 5's own prompts (what
# cpbook.llm.contamination finds): an Input/Output format, "What is A plus B?", a blank that
# replaces the first word with underscores. The models stored before the retune of issue #31 were
# tuned on it; it is kept so that an analysis of them reads the data they saw (`examples(...,
# version=2)`), never to tune on.
VERSION_2 = {
    "en": {"format": ("input_output", ("Input: {q}\nOutput:", " ")), "blank_first": "Fill in the blank: {q}",
           "math": {"plus": "What is {a} plus {b}?", "minus": "What is {a} minus {b}?",
                    "times": "What is {a} times {b}?"}},
    "fr": {"format": ("input_output", ("Entrée: {q}\nSortie:", " ")), "blank_first": "Complétez le blanc : {q}",
           "math": {"plus": "Combien font {a} plus {b} ?", "minus": "Combien font {a} moins {b} ?",
                    "times": "Combien font {a} fois {b} ?"}},
    "es": {"format": ("input_output", ("Entrada: {q}\nSalida:", " ")),
           "blank_first": "Completa el espacio en blanco: {q}",
           "math": {"plus": "¿Cuánto es {a} más {b}?", "minus": "¿Cuánto es {a} menos {b}?",
                    "times": "¿Cuánto es {a} por {b}?"}},
}
VERSIONS = (2, DATA_VERSION)


def version() -> int:
    """What identifies the data (part of the tuned model's cache key)."""
    return DATA_VERSION


# The English material in the shape of the authored translations (`material`).
ENGLISH = {
    "subjects": SUBJECTS, "predicates": PREDICATES, "endings": ENDINGS, "math": MATH_PHRASES,
    "kinds": {"blank_word": "Fill in the missing word: {q}",
              "repeat": "Repeat this sentence: {q}", "upper": "Rewrite this sentence in capital letters: {q}",
              "lower": "Write this sentence in lower case: {q}", "reverse_words": "Reverse the order of the words: {q}",
              "count_words": "How many words are in this sentence? {q}",
              "last_word": "What is the last word of this sentence? {q}",
              "larger": "Which number is larger, {a} or {b}?",
              "compare": "Is {a} greater than {b}? Answer yes or no."},
    "yes": "yes", "no": "no", "formats": FORMATS,
}
LANGUAGES = ("en", "fr", "es")


@lru_cache(maxsize=None)
def material(lang: str, version: int = DATA_VERSION) -> dict:
    """Word lists, phrasings and prompt formats of one language, as data `version` has them."""
    if version not in VERSIONS:
        raise ValueError(f"no instruction data version {version!r}; available: {', '.join(map(str, VERSIONS))}")
    if lang == "en":
        m = ENGLISH
    else:
        authored = json.loads(TRANSLATIONS.read_text(encoding="utf-8"))
        if lang not in authored:
            raise ValueError(f"no instruction material in {lang!r}; available: {', '.join(LANGUAGES)}")
        m = {**authored[lang], "formats": {name: tuple(f) for name, f in authored[lang]["formats"].items()}}
    if version == DATA_VERSION:
        return m
    old = VERSION_2[lang]
    name, fmt = old["format"]
    return {**m, "formats": {name: fmt, **m["formats"]}, "kinds": {"blank_first": old["blank_first"], **m["kinds"]},
            "math": {op: [old["math"][op], *phrases] for op, phrases in m["math"].items()},
            "blank": "___"}


def kinds(version: int = DATA_VERSION) -> tuple[str, ...]:
    """The instruction kinds of data `version`, in the order the random draws index them."""
    return KINDS if version == DATA_VERSION else (KINDS[0], "blank_first", *KINDS[1:])


def sentence(rng: np.random.Generator, m: dict = ENGLISH) -> str:
    return (f"{m['subjects'][rng.integers(len(m['subjects']))]} {m['predicates'][rng.integers(len(m['predicates']))]} "
            f"{m['endings'][rng.integers(len(m['endings']))]}.")


def _instruction(kind: str, rng: np.random.Generator, m: dict = ENGLISH) -> tuple[str, str]:
    """One (instruction, answer) pair of the given kind, in the language of material `m`."""
    say = m["kinds"]
    if kind == "math":
        op = list(OPERATORS)[rng.integers(len(OPERATORS))]
        a, b = (int(x) for x in rng.integers(2, 31, size=2))
        phrase = m["math"][op][rng.integers(len(m["math"][op]))]
        return phrase.format(a=a, b=b), str(OPERATORS[op](a, b))
    s = sentence(rng, m)
    words = s.rstrip(".").split()
    if kind == "blank_first":   # version 2 only
        return say[kind].format(q=f"___ {' '.join(s.split()[1:])}"), words[0]
    if kind == "blank_word":   # never the first word: the chapter's blank query blanks that one
        i = int(rng.integers(1, len(words)))
        blanked = s.split()
        blanked[i] = m.get("blank", BLANK) + ("." if blanked[i].endswith(".") else "")
        return say[kind].format(q=" ".join(blanked)), words[i]
    if kind == "repeat":
        return say[kind].format(q=s), s
    if kind == "upper":
        return say[kind].format(q=s), s.upper()
    if kind == "lower":
        return say[kind].format(q=s), s.lower()
    if kind == "reverse_words":
        return say[kind].format(q=s.rstrip(".")), " ".join(reversed(words))
    if kind == "count_words":
        return say[kind].format(q=s), str(len(words))
    if kind == "last_word":
        return say[kind].format(q=s), words[-1]
    a, b = (int(x) for x in rng.choice(np.arange(1, 100), size=2, replace=False))
    if kind == "larger":
        return say[kind].format(a=a, b=b), str(max(a, b))
    if kind == "compare":
        return say[kind].format(a=a, b=b), m["yes"] if a > b else m["no"]
    raise ValueError(f"unknown instruction kind {kind!r}; available: {', '.join(KINDS)}")


def example(seed: int, index: int, lang: str = "en", version: int = DATA_VERSION) -> dict:
    """Example `index` of the stream named by `seed`: the same pair always gives the same text.
    The random draws do not depend on the language: example i in French is example i in English,
    translated."""
    m = material(lang, version)
    rng = np.random.default_rng([seed, index])
    kind = kinds(version)[rng.integers(len(kinds(version)))]
    fmt = list(m["formats"])[rng.integers(len(m["formats"]))]
    q, answer = _instruction(kind, rng, m)
    template, lead = m["formats"][fmt]
    return {"kind": kind, "format": fmt, "language": lang, "instruction": q, "prompt": template.format(q=q),
            "answer": lead + answer}


def examples(seed: int, start: int, n: int, version: int = DATA_VERSION) -> list[dict]:
    return [example(seed, i, version=version) for i in range(start, start + n)]


@dataclass(frozen=True)
class Multilingual:
    """The instruction stream in several languages, taken in turn (example i is in
    languages[i % len(languages)]), so every batch is close to balanced and each language gets
    the same kinds and formats. A tuning set like the module itself: `examples` and `version`."""
    languages: tuple[str, ...]

    def examples(self, seed: int, start: int, n: int, version: int = DATA_VERSION) -> list[dict]:
        return [example(seed, i, self.languages[i % len(self.languages)], version) for i in range(start, start + n)]

    def version(self) -> dict:
        return {"instruct_data_version": DATA_VERSION, "languages": list(self.languages),
                "translations_sha256": cache.sha256_file(TRANSLATIONS)}


MULTILINGUAL = Multilingual(LANGUAGES)   # chapter 8: English + French + Spanish
