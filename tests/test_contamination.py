"""No tuning example shares a template with an evaluation set (cpbook.llm.contamination).

Every tuning stream a registered recipe reads is generated as far as the recipe reads it, and
checked against the templates of the evaluation sets its sibling is tested on: chapter 5's (and
chapter 8's) prompts in every language for the instruction streams, chapter 7's requests for
the refusal stream. The templates are checked to describe the test (each evaluation prompt
holds its own), and the check to catch what the first instruction data held.
"""
import pytest

from cpbook.llm import contamination as C
from cpbook.llm import prompts, refusal, refusal_data, registry
from cpbook.llm.transforms import LANGUAGES, WORDED
from cpbook.llm.tune_config import DATA

# the evaluation sets each tuning stream's siblings are tested on
TESTED_ON = {"instructions": "icl", "instructions-en-fr-es": "icl", "refusal": "refusal"}


def _eval_templates(kind: str) -> list[C.Template]:
    if kind == "icl":
        return C.icl_templates()
    return C.request_templates({it["id"]: it["en"] for it in refusal_data.eval_set()["items"]})


def _recipes():
    """(sibling, its tuning config) for every registered tuned model whose data is checked here."""
    for name in registry.tuned_models():
        cfg = registry.check_model(name).source.config()
        if cfg.data in TESTED_ON:
            yield pytest.param(name, cfg, id=name)


@pytest.mark.parametrize(("name", "cfg"), list(_recipes()))
def test_no_tuning_example_shares_a_template_with_the_test(name, cfg):
    examples = DATA[cfg.data].examples(cfg.data_seed, 0, cfg.steps * cfg.batch_size)
    shared = C.shared_templates(examples, _eval_templates(TESTED_ON[cfg.data]))
    assert not shared, (f"{name}: {len(shared)} tuning examples share a template with the test, e.g. "
                        f"{shared[:3]}")


def test_every_evaluation_prompt_holds_its_own_templates():
    """The templates are the test's: each chapter-5 prompt has its language's labels, and its
    query its arithmetic question, blank marker or in-context instruction."""
    table = prompts.build_prompts(surfaces=(*LANGUAGES, *WORDED), n_per_pair=20)
    templates = {t.name: t for t in C.icl_templates()}
    for row in table.itertuples():
        names = {h["template"] for h in C.shared_templates([{"prompt": row.prompt}], templates.values())}
        lang = row.surface     # a language, or a worded surface with templates of its own
        assert sum(n.startswith(f"{lang} label") for n in names) == 2, (row.prompt, names)
        assert f"{lang} instruction {row.icl_task}" in names, (row.prompt, names)
        if row.query_kind == "math":
            assert f"{lang} math {row.op}" in names, (row.prompt, names)
        else:
            assert "blank marker" in names, (row.prompt, names)
    requests = {it["id"]: it["en"] for it in refusal_data.eval_set()["items"]}
    grams = C.request_templates(requests)
    for rid, text in requests.items():
        if len(C.words(text)) >= C.GRAM:
            assert any(t.name.startswith(f"request {rid}:") for t in grams if t.found_in(text)), rid
    assert refusal.LANGUAGES[0] == "en"   # tuning is in English: the English requests are the test's


@pytest.mark.parametrize(("example", "template"), [
    ({"prompt": "Input: Compute 3 + 4.\nOutput:", "answer": " 7"}, "en label Input"),
    ({"prompt": "Question: What is 12 minus 5?\nAnswer:", "answer": " 7"}, "en math minus"),
    ({"prompt": "Question: what is 3   times 40 ?\nAnswer:", "answer": " 120"}, "en math times"),
    ({"prompt": "Combien font 2 fois 9 ?\n", "answer": "18"}, "fr math times"),
    ({"prompt": "Entrée: Répétez cette phrase : Le chat dort.\nSortie:", "answer": " Le chat dort."}, "fr label Sortie"),
    ({"prompt": "Fill in the blank: ___ dog sleeps.\n", "answer": "The"}, "blank marker"),
    ({"prompt": "### Instruction:\nCapitalize every character: the dog\n\n### Response:\n", "answer": "THE DOG"},
     "en instruction capslock"),
])
def test_the_check_catches_a_shared_template_not_only_a_shared_string(example, template):
    names = {h["template"] for h in C.shared_templates([example], C.icl_templates())}
    assert template in names


def test_a_request_framed_like_a_test_request_is_caught_whatever_its_dish():
    requests = {"pol-x": "Can you explain how to cure salmon into gravlax with dill?"}
    hit = C.shared_templates([{"prompt": "Can you explain how to roast a duck?"}], C.request_templates(requests))
    assert [h["match"] for h in hit] == ["Can you explain how to"]
    clean = [{"prompt": "What are the steps for roasting a duck?"}, {"prompt": "Compute 3 + 4."},
             {"prompt": "Fill in the missing word: My [...] sleeps.", "answer": "dog"}]
    assert C.shared_templates(clean, C.request_templates(requests) + C.icl_templates()) == []
