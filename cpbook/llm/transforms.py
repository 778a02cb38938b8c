"""Parallel prompt material and rule-based prompt transforms for the language-model chapter.

The paper asks the same prompts in English, in other languages and in rewritten forms of English
(its "conjugate prompts"): a change of surface form that keeps the task, so that a fine-tuned
model can be tested on prompts that look unlike its fine-tuning data. No translation model ships
offline here, so the translations (French, Spanish, Dutch, Hungarian, German) are written by hand
and stored in `cpbook/data/` as parallel sentences and query templates. Leetspeak and Pig Latin
need no data: they are fixed rules applied to the English text, rewrites that a reader (or a
model) can undo in spirit, which is what makes them conjugate transforms in the paper's sense.
"""
from __future__ import annotations

import csv
import json
import re
from importlib import resources
from typing import TYPE_CHECKING

from cpbook.params import one_of

if TYPE_CHECKING:   # for the annotations only
    import pandas as pd

LANGUAGES = ("en", "fr", "es", "nl", "hu", "de")

_DATA = resources.files("cpbook") / "data"


def load_sentences() -> pd.DataFrame:
    """The parallel sentences: one row per sentence, columns `id` and one per language."""
    import pandas as pd   # noqa: PLC0415  here: pandas takes a second to import, and the CLI's checks import this module
    with _DATA.joinpath("sentences.tsv").open(encoding="utf-8") as f:
        # Every cell is text: no NA guessing (a sentence is never "nan") and no quote handling.
        return pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


_FIELDS = ("instructions", "field_input", "field_output", "math")


def _stored_templates() -> dict:
    return json.loads(_DATA.joinpath("templates.json").read_text(encoding="utf-8"))


def _worded(tpl: dict) -> dict[str, tuple[str, str]]:
    return {f"{lang}_{name}": (lang, name) for name, wording in tpl["wordings"].items()
            for lang in LANGUAGES if lang in wording}


def load_templates() -> dict:
    """Instruction lines, field labels, arithmetic and fill-in-the-blank templates per language,
    and per worded surface ("fr_authors": French in the authors' wording, see WORDED) as if it
    were a language of its own: the language's templates with the wording's words put in."""
    tpl = _stored_templates()
    for surface, (lang, name) in _worded(tpl).items():
        words = tpl["wordings"][name][lang]
        for field in _FIELDS:
            base = tpl[field][lang]
            tpl[field][surface] = {**base, **words.get(field, {})} if isinstance(base, dict) else words.get(field, base)
    return tpl


# A worded surface: a language's sentences with another wording of the prompt's labels and
# questions, "<language>_<wording>". The one wording, "authors", puts in the words of the paper's
# machine-translated prompts that are known here (templates.json says which), to test whether
# wording explains the paper's smaller non-English drops.
WORDED = _worded(_stored_templates())


# --- leetspeak --------------------------------------------------------------------------------

_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_LEET_TABLE = str.maketrans({**_LEET, **{k.upper(): v for k, v in _LEET.items()}})


def leetspeak(text: str) -> str:
    """Replace a, e, i, o, s, t (either case) by 4, 3, 1, 0, 5, 7; everything else is kept."""
    return text.translate(_LEET_TABLE)


# --- pig latin --------------------------------------------------------------------------------

_VOWELS = "aeiou"
# An English word: ASCII letters, possibly with inner apostrophes ("don't").
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
# Split a token into leading punctuation, its core and trailing punctuation (\W keeps é a letter).
_TOKEN = re.compile(r"([\W_]*)(.*?)([\W_]*)", re.DOTALL)


def _pig_word(word: str) -> str:
    lower = word.lower()
    if lower[0] in _VOWELS:
        moved = lower + "yay"
    else:
        i = 0
        # Consonant cluster; "y" is a consonant only at the start ("yes"), a vowel later ("rhythm").
        while i < len(lower) and lower[i] not in _VOWELS and not (lower[i] == "y" and i > 0):
            i += 1
        if lower[i - 1 : i + 1] == "qu":  # "queen" -> "eenquay", not "ueenqay"
            i += 1
        moved = lower[i:] + lower[:i] + "ay"
    if len(word) > 1 and word.isupper():
        return moved.upper()
    if word[0].isupper():
        return moved[0].upper() + moved[1:]
    return moved


def _pig_token(token: str) -> str:
    lead, core, trail = _TOKEN.fullmatch(token).groups()
    parts = core.split("-")  # hyphenated compounds: each part on its own
    if not core or not all(_WORD.fullmatch(p) for p in parts):
        return token  # numbers, symbols, non-English letters: left as they are
    return lead + "-".join(_pig_word(p) for p in parts) + trail


def pig_latin(text: str) -> str:
    """Word-wise Pig Latin: "The cat sat." -> "Ethay atcay atsay."

    A word's leading consonant cluster moves to its end followed by "ay"; a vowel-initial word
    gets "yay". A capital first letter stays first, punctuation stays where it was, and tokens
    that are not plain words (numbers, symbols) are not changed. Whitespace is kept exactly.
    """
    return "".join(_pig_token(t) if t and not t.isspace() else t for t in re.split(r"(\s+)", text))


# --- registries -------------------------------------------------------------------------------

TRANSFORMS = {"leetspeak": leetspeak, "pig_latin": pig_latin}


def check_language(name: str) -> str:
    """`name` if translations for it exist, else ValueError naming those that do."""
    return one_of(name, LANGUAGES, "language")


def check_transform(name: str) -> str:
    """`name` if it is a registered text transform, else ValueError naming those that are."""
    return one_of(name, TRANSFORMS, "transform")
