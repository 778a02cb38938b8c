"""The ICL-vs-instruction prompt set: structure, answers, parallel draws, controls."""
import re

import pandas as pd
import pytest

from cpbook.llm import prompts as P
from cpbook.llm.transforms import LANGUAGES, WORDED, load_templates

ALL = (*LANGUAGES, "leetspeak", "pig_latin")


@pytest.fixture(scope="module")
def df():
    return P.build_prompts(ALL, n_per_pair=12, seed=3)


def test_counts_and_columns(df):
    assert len(df) == len(ALL) * len(P.TASK_PAIRS) * 12
    assert set(df.task_pair) == set(P.TASK_PAIRS) == {"capslock|math", "capslock|blank",
                                                      "repeat|math", "repeat|blank"}
    counts = df.groupby(["surface", "task_pair"]).size()
    assert (counts == 12).all() and len(counts) == len(ALL) * 4
    assert P.build_prompts().shape[0] == 400   # default: English, 100 per task pair


def test_prompt_layout(df):
    tpl = load_templates()
    for _, r in df[df["text_transform"] == "none"].iterrows():
        blocks = r.prompt.split("\n\n")
        assert len(blocks) == 4 and r.n_demos == 2    # instruction, two demos, query
        assert blocks[0] == tpl["instructions"][r.language][r.icl_task]
        label_in, label_out = tpl["field_input"][r.language], tpl["field_output"][r.language]
        f = str.upper if r.icl_task == "capslock" else (lambda s: s)
        for demo in blocks[1:3]:
            inp, out = demo.split("\n")
            assert inp.startswith(label_in + ": ") and out.startswith(label_out + ": ")
            assert out[len(label_out) + 2:] == f(inp[len(label_in) + 2:])
        assert blocks[3] == f"{label_in}: {r.query_text}\n{label_out}:"
        assert r.prompt.endswith(label_out + ":")


def test_math_answers_and_ranges(df):
    math = df[df.query_kind == "math"]
    assert math.a.between(4, 20).all() and math.b.between(4, 20).all()
    ops = {"plus": int.__add__, "minus": int.__sub__, "times": int.__mul__}
    for _, r in math.iterrows():
        assert r.if_answer == f" {ops[r.op](int(r.a), int(r.b))}"
        assert re.search(rf"\b{int(r.a)}\b.*\b{int(r.b)}\b", r.query_text)


def test_icl_answers_by_hand(df):
    en = df[(df.surface == "en") & (df.query_kind == "math")]
    assert set(en[en.icl_task == "capslock"].icl_answer) == {" WHAT"}
    assert set(en[en.icl_task == "repeat"].icl_answer) == {" What"}
    es = df[(df.surface == "es") & (df.query_kind == "math")]
    assert set(es[es.icl_task == "capslock"].icl_answer) == {" ¿CUÁNTO"}   # the "¿" is in the input
    assert set(df[(df.surface == "leetspeak") & (df.task_pair == "capslock|math")].icl_answer) == {" WH47"}
    assert set(df[(df.surface == "pig_latin") & (df.task_pair == "repeat|math")].icl_answer) == {" Atwhay"}
    # The ICL answer is the task applied to the query's first token, in every surface form.
    for _, r in df.iterrows():
        word = r.query_text.split()[0].rstrip(".,;:!?")
        assert r.icl_answer == " " + (word.upper() if r.icl_task == "capslock" else word)


def test_blank_queries_follow_the_authors(df):
    """The first word becomes one underscore per character and nothing else is added; the ICL
    answer is the underscores, the instruction-following answer the word under the ICL task."""
    blank = df[df.query_kind == "blank"]
    assert len(blank) == len(ALL) * 2 * 12
    for _, r in blank.iterrows():
        head, rest = r.query_text.split(" ", 1)
        word = r.if_answer[1:]
        assert set(head.rstrip(".,;:!?")) == {"_"} and len(head.rstrip(".,;:!?")) == len(word)
        assert r.icl_answer == " " + head.rstrip(".,;:!?")
        assert word == word.upper() if r.icl_task == "capslock" else True
        # the query is the sentence itself, as the model sees the other inputs
        assert not rest.startswith(("Fill", "Remplissez", "_"))
    en = blank[(blank.surface == "en") & (blank.icl_task == "repeat")]
    assert all(s.startswith(f"{w[1:]} ") for s, w in zip(en.query_id.map(_english), en.if_answer))


def _english(sentence_id):
    from cpbook.llm.transforms import load_sentences
    table = load_sentences().set_index("id")
    return table.loc[sentence_id, "en"]


def test_blank_first_word_keeps_punctuation_and_refuses_no_word():
    assert P.blank_first_word("Yes, we can.") == ("___, we can.", "Yes")
    assert P.blank_first_word("Wh47 15 7h15?") == ("____ 15 7h15?", "Wh47")
    with pytest.raises(ValueError, match="no word"):
        P.blank_first_word("... and so on")


# The exact text of a few prompts, written out by hand from the authors' format and our
# authored sentences: seed 0, example 0 (and 1), two demonstrations.
PINNED = {
    ("en", "capslock|blank", 0): (
        "Capitalize every character.\n\n"
        "Input: The sun rises later in the winter months.\n"
        "Output: THE SUN RISES LATER IN THE WINTER MONTHS.\n\n"
        "Input: The referee stopped the game because of the rain.\n"
        "Output: THE REFEREE STOPPED THE GAME BECAUSE OF THE RAIN.\n\n"
        "Input: _____ and cheese are on the kitchen table.\n"
        "Output:", " _____", " BREAD"),
}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_pinned_prompts_by_hand(key):
    surface, pair, index = key
    row = P.build_prompts([surface], n_per_pair=index + 1, seed=0, task_pairs=[pair]).iloc[index]
    assert (row.prompt, row.icl_answer, row.if_answer) == PINNED[key]


def test_pinned_prompts_every_surface_and_pair():
    """Two prompts per surface and task pair, stored as text: any change to the prompts (a
    template, a sentence, the draws) shows up here and must be made on purpose."""
    import json
    from pathlib import Path
    pinned = json.loads((Path(__file__).parent / "data" / "pinned_prompts.json").read_text(encoding="utf-8"))
    now = P.build_prompts(ALL, n_per_pair=2, seed=0)
    now = now.assign(key=now.surface + " " + now.task_pair + " " + now["index"].astype(str))
    got = {k: [p, i, f] for k, p, i, f in zip(now.key, now.prompt, now.icl_answer, now.if_answer)}
    assert len(pinned) == len(ALL) * len(P.TASK_PAIRS) * 2
    assert got == pinned


def test_more_demonstrations_extend_the_same_question():
    two = P.build_prompts(["en", "fr"], n_per_pair=6, seed=2)
    for n in (1, 4, 8, P.MAX_DEMOS):
        more = P.build_prompts(["en", "fr"], n_per_pair=6, seed=2, n_demos=n)
        cols = ["query_text", "icl_answer", "if_answer", "query_id"]
        pd.testing.assert_frame_equal(more[cols], two[cols])
        for a, b in zip(two.demo_ids, more.demo_ids):
            shorter, longer = (a, b) if n >= 2 else (b, a)
            assert longer.startswith(shorter)
        assert (more.prompt.str.count("\n\n") == n + 1).all()
        ids = more.demo_ids.str.split(",")
        assert (ids.map(len) == n).all() and (ids.map(lambda x: len(set(x))) == n).all()
        assert not any(q in d for q, d in zip(more.query_id.dropna(), ids))
    with pytest.raises(ValueError, match="n_demos"):
        P.build_prompts(["en"], n_demos=P.MAX_DEMOS + 1)
    with pytest.raises(ValueError, match="n_demos"):
        P.build_prompts(["en"], n_demos=0)


def test_draws_are_parallel_across_surfaces(df):
    keys = ["task_pair", "index"]
    for col in ["op", "a", "b", "demo_ids", "query_id", "if_answer"]:
        if col == "if_answer":   # numbers are the same everywhere; blanked words differ by language
            sub = df[df.query_kind == "math"]
        else:
            sub = df
        per = sub.groupby(keys)[col].nunique(dropna=False)
        assert (per == 1).all(), col
    # the same numbers appear in every language's math query
    for _, grp in df[df.query_kind == "math"].groupby(keys):
        nums = {tuple(re.findall(r"\d+", q)) for q in grp[grp["text_transform"] != "leetspeak"].query_text}
        assert len(nums) == 1


def test_draws_do_not_depend_on_what_else_is_asked(df):
    one = P.build_prompts(["hu"], n_per_pair=12, seed=3, task_pairs=["repeat|math"])
    same = df[(df.surface == "hu") & (df.task_pair == "repeat|math")]
    assert one.prompt.tolist() == same.prompt.tolist()


def test_seed_reproducible_and_matters():
    a = P.build_prompts(["en", "de"], n_per_pair=5, seed=7)
    b = P.build_prompts(["en", "de"], n_per_pair=5, seed=7)
    c = P.build_prompts(["en", "de"], n_per_pair=5, seed=8)
    assert a.equals(b)
    assert a.prompt.tolist() != c.prompt.tolist()


def test_controls_do_not_conflict():
    c = P.build_prompts(ALL, n_per_pair=10, seed=1, control=True)
    assert set(c.task_pair) == set(P.CONTROL_PAIRS) and len(c) == len(ALL) * 2 * 10
    assert c.if_answer.isna().all()
    tpl = load_templates()
    for _, r in c.iterrows():
        assert P.BLANK not in r.query_text
        assert r["text_transform"] == "leetspeak" or not re.search(r"\d", r.query_text)
        assert r.query_text.endswith(".")                   # a statement, not a question
        if r["text_transform"] == "none":
            lang = r.language
            starts = [m.split("{")[0].strip() for m in tpl["math"][lang].values()]
            assert not any(s and r.query_text.startswith(s) for s in starts)


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match="available languages: en, fr.*worded: fr_authors.*transforms: leetspeak, pig_latin"):
        P.build_prompts(["klingon"])
    with pytest.raises(ValueError, match="capslock\\|math"):
        P.build_prompts(["en"], task_pairs=["capslock|poetry"])
    with pytest.raises(ValueError, match="n_per_pair"):
        P.build_prompts(["en"], n_per_pair=0)
    with pytest.raises(ValueError, match="seed"):
        P.build_prompts(["en"], seed=-1)


@pytest.mark.parametrize("surface", sorted(WORDED))
def test_a_worded_surface_changes_only_its_wordings_words(surface):
    """'fr_authors' is the French prompt with the authors' words put in: the same draws and
    sentences, the same answers where the query's first word is the same, and every difference
    between the two prompts one of the wording's words."""
    lang, name = WORDED[surface]
    words = load_templates()["wordings"][name][lang]
    both = P.build_prompts(surfaces=(lang, surface), n_per_pair=10)
    plain, worded = (both[both["surface"] == s].reset_index(drop=True) for s in (lang, surface))
    assert (worded["language"] == lang).all() and (worded["if_answer"] == plain["if_answer"]).all()
    assert (worded["query_id"].fillna("") == plain["query_id"].fillna("")).all()
    changed = worded["prompt"] != plain["prompt"]
    assert changed.any()
    new = {w for v in words.values() for w in (v.values() if isinstance(v, dict) else [v])}
    for a, b in zip(plain["prompt"][changed], worded["prompt"][changed]):
        extra = set(re.findall(r"[^\W\d_]+", b)) - set(re.findall(r"[^\W\d_]+", a))
        assert extra and all(any(w in t for t in new) for w in extra), (extra, b)
