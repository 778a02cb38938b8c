"""The ICL-vs-instruction prompt set: structure, answers, parallel draws, controls."""
import re

import pytest

from cpbook.llm import prompts as P
from cpbook.llm.transforms import LANGUAGES, load_templates

ALL = (*LANGUAGES, "leetspeak", "pig_latin")


@pytest.fixture(scope="module")
def df():
    return P.build_prompts(ALL, n_per_pair=12, seed=3)


def test_counts_and_columns(df):
    assert len(df) == len(ALL) * len(P.TASK_PAIRS) * 12
    assert set(df.task_pair) == set(P.TASK_PAIRS) == {"capslock|math", "capslock|startblank",
                                                      "repeat|math", "repeat|startblank"}
    counts = df.groupby(["surface", "task_pair"]).size()
    assert (counts == 12).all() and len(counts) == len(ALL) * 4
    assert P.build_prompts().shape[0] == 400   # default: English, 100 per task pair


def test_prompt_layout(df):
    tpl = load_templates()
    for _, r in df[df["text_transform"] == "none"].iterrows():
        blocks = r.prompt.split("\n\n")
        assert len(blocks) == 4                       # instruction, two demos, query
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
    fr = df[(df.surface == "fr") & (df.task_pair == "repeat|startblank")]
    assert set(fr.icl_answer) == {" Remplissez"}
    assert set(df[(df.surface == "leetspeak") & (df.task_pair == "capslock|math")].icl_answer) == {" WH47"}
    assert set(df[(df.surface == "pig_latin") & (df.task_pair == "repeat|math")].icl_answer) == {" Atwhay"}
    # The ICL answer is the task applied to the query's first token, in every surface form.
    for _, r in df.iterrows():
        word = r.query_text.split()[0].rstrip(".,;:!?")
        assert r.icl_answer == " " + (word.upper() if r.icl_task == "capslock" else word)


def test_startblank_blanks_the_first_word(df):
    blank = df[df.query_kind == "startblank"]
    for _, r in blank.iterrows():
        assert P.BLANK in r.query_text and r.if_answer.strip() not in ("", P.BLANK)
        assert r.if_answer.strip().isalpha() or r["text_transform"] == "leetspeak"
        rest = r.query_text.split(P.BLANK, 1)[1]
        assert not rest.startswith(r.if_answer.strip())


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
            starts.append(tpl["startblank"][lang].split("{")[0].strip())
            assert not any(s and r.query_text.startswith(s) for s in starts)


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match="available languages: en, fr.*transforms: leetspeak, pig_latin"):
        P.build_prompts(["klingon"])
    with pytest.raises(ValueError, match="capslock\\|math"):
        P.build_prompts(["en"], task_pairs=["capslock|poetry"])
    with pytest.raises(ValueError, match="n_per_pair"):
        P.build_prompts(["en"], n_per_pair=0)
    with pytest.raises(ValueError, match="seed"):
        P.build_prompts(["en"], seed=-1)
