"""Does a tuning set contain the test? Templates of the evaluation sets, found in tuning examples.

A tuned sibling that learned from the test's own format answers the test by rote, not by
inferring what the prompt asks for. Identical strings are the least of it: a tuning example
"Input: What is 7 plus 3?\\nOutput: 10" shares no string with the test prompt "Input: What is
12 minus 5?\\nOutput:", yet it teaches exactly the test's reading. So the check is by template,
the fixed text of an evaluation prompt with its slots (numbers, sentences) left open:

- chapter 5's prompts (`prompts`): the demonstration format's field labels at the start of a
  line ("Input:" / "Output:", and each language's), the arithmetic questions with any numbers
  ("What is {a} plus {b}?"), the blank query's marker (a run of underscores), and the in-context
  tasks' instruction lines ("Capitalize every character.");
- chapter 7's requests (`refusal`): each evaluation request's word five-grams (lower case,
  punctuation dropped), so a tuning request framed like a test request ("What's the best way to
  ...") is caught even when its dish differs.

`shared_templates(examples, templates)` lists every (example, template) pair that matches; the
test suite runs it over every tuning stream the registry's recipes read and every evaluation set.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cpbook.llm.transforms import LANGUAGES, WORDED, load_templates

GRAM = 5   # words in a request frame: "how do I make a" is one; "how do I" is English


@dataclass(frozen=True)
class Template:
    name: str           # what it is, e.g. "fr math times" or "request ord-011"
    pattern: re.Pattern

    def found_in(self, text: str) -> str | None:
        m = self.pattern.search(text)
        return m.group(0) if m else None


def _slot_pattern(template: str) -> str:
    """A template with {a}, {b} as any integer; its fixed text matched case- and space-blind."""
    # re.split with a group keeps the slots: fixed text at even positions, slots at odd ones
    pieces = []
    for i, part in enumerate(re.split(r"(\{\w+\})", template)):
        pieces += [r"-?\d+"] if i % 2 else [re.escape(w) for w in part.split()]
    return r"\s*".join(pieces)


def icl_templates(languages=(*LANGUAGES, *WORDED)) -> list[Template]:
    """The fixed text of chapter 5's prompts (and chapter 8's, which are the same) in `languages`
    (languages and worded surfaces)."""
    tpl = load_templates()
    out = [Template("blank marker", re.compile(r"_{2,}"))]
    for lang in languages:
        for field in ("field_input", "field_output"):
            label = tpl[field][lang]
            out.append(Template(f"{lang} label {label}", re.compile(rf"(?im)^\s*{re.escape(label)}\s*:")))
        for op, text in tpl["math"][lang].items():
            out.append(Template(f"{lang} math {op}", re.compile(_slot_pattern(text), re.IGNORECASE)))
        for task, text in tpl["instructions"][lang].items():
            out.append(Template(f"{lang} instruction {task}",
                                re.compile(_slot_pattern(text.rstrip(".")), re.IGNORECASE)))
    return out


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes kept: "what's" is one word)."""
    return re.findall(r"[\w']+", text.lower())


def grams(text: str, n: int = GRAM) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def request_templates(requests: dict[str, str], n: int = GRAM) -> list[Template]:
    """One template per word n-gram of each evaluation request ({id: text}); matched on words."""
    out = []
    for rid, text in requests.items():
        for g in sorted(grams(text, n)):
            out.append(Template(f"request {rid}: {' '.join(g)}",
                                re.compile(r"(?i)(?<![\w'])" + r"[^\w']+".join(re.escape(w) for w in g) + r"(?![\w'])")))
    return out


def shared_templates(examples: list[dict], templates: list[Template], fields=("prompt", "answer")) -> list[dict]:
    """Every (tuning example, evaluation template) pair where the template occurs in one of the
    example's `fields`: [{"index", "template", "field", "match"}], empty for a clean tuning set."""
    found, seen = [], {}
    for i, ex in enumerate(examples):
        for field in fields:
            text = ex.get(field) or ""
            if text not in seen:   # streams repeat their texts (chapter 7's holds 480 requests)
                seen[text] = [(t.name, hit) for t in templates if (hit := t.found_in(text)) is not None]
            found += [{"index": i, "template": name, "field": field, "match": hit} for name, hit in seen[text]]
    return found
