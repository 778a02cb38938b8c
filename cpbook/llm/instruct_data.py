"""English-only instruction data, generated here, for instruction-tuning the Gemma base model.

The paper's instruction-tuned models (Alpaca, Vicuna, OPT-IML) learned from large English
instruction sets. We cannot download one, so this module writes a small one from rules: every
example is a single instruction (a sum to work out, a blank to fill, words to count, ...) with its
answer, in one of a few common prompt formats. There are no demonstrations in it: what tuning
teaches is "when the input is an instruction, carry it out".

The sentences are built from the word lists below, not taken from `data/sentences.tsv`, so the
chapter's ICL prompts never reuse a training sentence. The arithmetic phrasings include the
chapter's "What is A plus B?", as any general instruction set would; the chapter says so.
Everything is English: the language gap the chapter measures is the one between the tuning
language and the others.
"""
from __future__ import annotations

import numpy as np

from cpbook.llm.prompts import OPERATORS

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
    "plus": ["What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.",
             "What is the sum of {a} and {b}?"],
    "minus": ["What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}.",
              "What do you get when you take {b} away from {a}?"],
    "times": ["What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} * {b}.",
              "What is the product of {a} and {b}?"],
}

# (template, answer-leading text): the answer follows a colon with a space, or a new line.
FORMATS = {
    "input_output": ("Input: {q}\nOutput:", " "),
    "question_answer": ("Question: {q}\nAnswer:", " "),
    "alpaca": ("### Instruction:\n{q}\n\n### Response:\n", ""),
    "plain": ("{q}\n", ""),
}
# Short answers (a number, a word) and long ones (the input sentence rewritten). A first version
# had short answers only, and the tuned model learned to answer every prompt with one word,
# even "repeat this sentence": the long kinds keep the skill of writing out a rewritten input.
KINDS = ("math", "blank_first", "blank_word", "count_words", "last_word", "larger", "compare",
         "repeat", "upper", "lower", "reverse_words")
# Bump when the generated text changes: it is part of the tuned model's cache key.
DATA_VERSION = 2


def version() -> int:
    """What identifies the data (part of the tuned model's cache key)."""
    return DATA_VERSION


def sentence(rng: np.random.Generator) -> str:
    return (f"{SUBJECTS[rng.integers(len(SUBJECTS))]} {PREDICATES[rng.integers(len(PREDICATES))]} "
            f"{ENDINGS[rng.integers(len(ENDINGS))]}.")


def _instruction(kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """One (instruction, answer) pair of the given kind."""
    if kind == "math":
        op = list(OPERATORS)[rng.integers(len(OPERATORS))]
        a, b = (int(x) for x in rng.integers(2, 31, size=2))
        phrase = MATH_PHRASES[op][rng.integers(len(MATH_PHRASES[op]))]
        return phrase.format(a=a, b=b), str(OPERATORS[op](a, b))
    s = sentence(rng)
    words = s.rstrip(".").split()
    if kind == "blank_first":
        return f"Fill in the blank: ___ {' '.join(s.split()[1:])}", words[0]
    if kind == "blank_word":
        i = int(rng.integers(1, len(words)))
        blanked = s.split()
        blanked[i] = "___" + ("." if blanked[i].endswith(".") else "")
        return f"Fill in the missing word: {' '.join(blanked)}", words[i]
    if kind == "repeat":
        return f"Repeat this sentence: {s}", s
    if kind == "upper":
        return f"Rewrite this sentence in capital letters: {s}", s.upper()
    if kind == "lower":
        return f"Write this sentence in lower case: {s}", s.lower()
    if kind == "reverse_words":
        return f"Reverse the order of the words: {s.rstrip('.')}", " ".join(reversed(words))
    if kind == "count_words":
        return f"How many words are in this sentence? {s}", str(len(words))
    if kind == "last_word":
        return f"What is the last word of this sentence? {s}", words[-1]
    a, b = (int(x) for x in rng.choice(np.arange(1, 100), size=2, replace=False))
    if kind == "larger":
        return f"Which number is larger, {a} or {b}?", str(max(a, b))
    if kind == "compare":
        return f"Is {a} greater than {b}? Answer yes or no.", "yes" if a > b else "no"
    raise ValueError(f"unknown instruction kind {kind!r}; available: {', '.join(KINDS)}")


def example(seed: int, index: int) -> dict:
    """Example `index` of the stream named by `seed`: the same pair always gives the same text."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[rng.integers(len(KINDS))]
    fmt = list(FORMATS)[rng.integers(len(FORMATS))]
    q, answer = _instruction(kind, rng)
    template, lead = FORMATS[fmt]
    return {"kind": kind, "format": fmt, "instruction": q, "prompt": template.format(q=q),
            "answer": lead + answer}


def examples(seed: int, start: int, n: int) -> list[dict]:
    return [example(seed, i) for i in range(start, start + n)]
