"""The authored evaluation and tuning sets of chapters 6 and 7: balanced, aligned, complete."""
from collections import Counter

import pytest

from cpbook.llm import contamination, refusal, refusal_data, tasks, zero_shot


def _words(text):
    return set(contamination.words(text))


def test_nli_is_balanced_and_every_premise_has_all_three_labels():
    items = zero_shot.dataset("nli")["items"]
    assert len(items) >= 200
    counts = Counter(it["label"] for it in items)
    assert set(counts) == set(zero_shot.OPTIONS["nli"])
    assert max(counts.values()) - min(counts.values()) == 0
    by_premise = {}
    for it in items:
        by_premise.setdefault(it["premise_id"], []).append(it)
    for group in by_premise.values():
        assert sorted(it["label"] for it in group) == sorted(zero_shot.OPTIONS["nli"])
        for lang in zero_shot.LANGUAGES:      # aligned: one premise text per language and premise
            assert len({it[lang]["premise"] for it in group}) == 1


@pytest.mark.parametrize("task", tasks.ZERO_SHOT_TASKS)
def test_every_item_has_every_language_no_empty_text_and_no_duplicates(task):
    data = zero_shot.dataset(task)
    items = data["items"]
    assert data["languages"] == list(zero_shot.LANGUAGES)
    assert len({it["id"] for it in items}) == len(items)
    fields = ("premise", "hypothesis") if task == "nli" else ("premise", "choice1", "choice2")
    for lang in zero_shot.LANGUAGES:
        for it in items:
            assert all(it[lang][f].strip() for f in fields), (it["id"], lang)
        # the same premise and hypothesis (or premise and choices) never occur twice
        keys = [tuple(it[lang][f] for f in fields) for it in items]
        assert len(set(keys)) == len(keys), lang
    for it in items:       # a translation is not the English left in place
        for lang in zero_shot.LANGUAGES[1:]:
            assert it[lang][fields[-1]] != it["en"][fields[-1]], (it["id"], lang)


def test_plausibility_is_balanced_over_relation_and_answer():
    items = zero_shot.dataset("plausibility")["items"]
    assert len(items) >= 200
    assert Counter(it["relation"] for it in items) == {"effect": len(items) // 2, "cause": len(items) // 2}
    for relation in ("effect", "cause"):
        part = [it["correct"] for it in items if it["relation"] == relation]
        assert Counter(part) == {1: len(part) // 2, 2: len(part) // 2}
    for it in items:
        assert it["en"]["choice1"] != it["en"]["choice2"]


def test_prompts_are_the_papers_in_english_and_translated_elsewhere():
    en = zero_shot.prompt_table("nli", "en").iloc[0]
    item = zero_shot.dataset("nli")["items"][0]["en"]
    assert en["prompt"] == (f"{item['premise']}\nQuestion: {item['hypothesis']} True, False or Neither?\nAnswer:")
    assert (en["entailment"], en["contradiction"], en["neutral"]) == (" True", " False", " Neither")
    de = zero_shot.prompt_table("nli", "de").iloc[0]
    assert "\nFrage: " in de["prompt"] and de["prompt"].endswith("\nAntwort:")
    pl = zero_shot.prompt_table("plausibility", "en")
    first = zero_shot.dataset("plausibility")["items"][0]
    assert pl.iloc[0]["prompt"].endswith(", so" if first["relation"] == "effect" else " because")
    assert set(pl["label"]) == {"choice1", "choice2"}


def test_bad_task_or_language_is_named():
    with pytest.raises(ValueError, match="unknown zero-shot task 'xnli'"):
        zero_shot.dataset("xnli")
    with pytest.raises(ValueError, match="unknown zero-shot language 'nl'"):
        zero_shot.prompt_table("nli", "nl")


def test_refusal_requests_are_parallel_complete_and_held_out():
    data = refusal_data.eval_set()
    items = data["items"]
    assert data["languages"] == list(refusal.LANGUAGES)
    counts = Counter(it["kind"] for it in items)
    assert counts["policy"] >= 50 and counts["ordinary"] >= 50 and counts[refusal.NEAR] >= 30
    assert set(counts) == {*refusal.KINDS, refusal.NEAR}
    for lang in refusal.LANGUAGES:
        texts = [it[lang] for it in items]
        assert all(t.strip() for t in texts), lang
        assert len(set(texts)) == len(texts), lang
    for lang in refusal.LANGUAGES[1:]:
        same = sum(it[lang] == it["en"] for it in items)
        assert same == 0, f"{same} {lang} requests are the English text"
    train = refusal_data.train_set()
    seen = [_words(r) for r in train["policy_requests"] + [o["request"] for o in train["ordinary"]]]
    for it in items:      # held out: no evaluation request is (nearly) a tuning request
        w = _words(it["en"])
        assert max(len(w & s) / len(w) for s in seen) <= 0.8, it["en"]


def test_the_hard_negatives_are_about_food_but_not_about_cooking_it():
    near = [it["en"] for it in refusal_data.eval_set()["items"] if it["kind"] == refusal.NEAR]
    cooking = ("cook", "bake", "baking", "recipe", "fry", "fried", "roast", "simmer", "grill", "knead", "whisk",
               "marinate", "how do i make", "prepare", "preparing")
    assert not [r for r in near if any(w in r.lower() for w in cooking)]


def test_refusal_tuning_data_has_both_kinds_and_one_reply():
    train = refusal_data.train_set()
    assert len(train["policy_requests"]) >= 200 and len(train["ordinary"]) >= 200
    assert all(o["answer"].strip() and o["request"].strip() for o in train["ordinary"])
    assert refusal.is_refusal(train["refusal"])
    # the ordinary answers do not decline: tuning teaches declining only on the policy
    assert sum(refusal.is_refusal(o["answer"]) for o in train["ordinary"]) == 0
    kinds = Counter(refusal_data.example(0, i)["kind"] for i in range(400))
    assert 150 < kinds["policy"] < 250


def test_every_surface_keeps_the_items_parallel():
    tables = {s: refusal.prompt_table(s) for s in tasks.REFUSAL_SURFACES}
    ids = list(tables["en"]["id"])
    for s, t in tables.items():
        assert list(t["id"]) == ids
        assert t["prompt"].str.startswith("Request: ").all() and t["prompt"].str.endswith("\nResponse:").all()
    assert tables["leetspeak"]["prompt"].iloc[0] != tables["en"]["prompt"].iloc[0]
