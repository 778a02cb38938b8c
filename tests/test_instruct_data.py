"""The generated instruction data of chapters 5 and 8: the English stream is pinned (a tuned
model's cache key names it by version, so its text must not change silently) and the French and
Spanish material is a complete, translated copy of the English."""
import hashlib
import json
import re

import pytest

from cpbook.llm import instruct_data as D

# SHA-256 of the first 3,000 English examples (prompt and answer) of stream 0, version 3 (the
# decontaminated stream). Changing it means bumping DATA_VERSION.
ENGLISH_STREAM_SHA256 = "54473796174bd9f4184d26967c54ba20bfd93bb284e0731fa6e3b4d90d1f2c2a"
# The same of version 2, which the stored models before issue #31's retune were tuned on (the
# digest the test pinned when version 2 was current), and of its first 800 multilingual examples
# (chapter 8's sibling: 100 steps of 8).
VERSION_2_SHA256 = {"en": "a529197becab2d5855b1e7cba9ccc5aeda1b3dc42378c9f5ff13f540f55cf856",
                    "en-fr-es": "5e3e6a27dcde1616614175afb93d19a221a847cf8cf69409dad48d6936e557de"}


def _placeholders(text):
    return sorted(re.findall(r"\{\w+\}", text))


def test_the_english_stream_is_the_one_the_tuned_model_learned_from():
    pairs = [{k: v for k, v in e.items() if k != "language"} for e in D.examples(0, 0, 3000)]
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
    assert digest == ENGLISH_STREAM_SHA256, "the English instructions changed: bump DATA_VERSION"


def test_version_2_is_the_text_the_stored_models_were_tuned_on():
    english = [{k: v for k, v in e.items() if k != "language"} for e in D.examples(0, 0, 3000, version=2)]
    multilingual = D.MULTILINGUAL.examples(0, 0, 800, version=2)
    assert hashlib.sha256(json.dumps(english).encode()).hexdigest() == VERSION_2_SHA256["en"]
    assert hashlib.sha256(json.dumps(multilingual).encode()).hexdigest() == VERSION_2_SHA256["en-fr-es"]
    # what made it version 2: the chapter's own templates, in every language
    assert {e["format"] for e in multilingual} >= {"input_output"}
    assert {e["kind"] for e in multilingual} >= {"blank_first"}
    assert not {e["format"] for e in D.MULTILINGUAL.examples(0, 0, 800)} & {"input_output"}


def test_an_unknown_data_version_is_refused():
    with pytest.raises(ValueError, match="no instruction data version 1; available: 2, 3"):
        D.examples(0, 0, 1, version=1)


@pytest.mark.parametrize("lang", ["fr", "es"])
def test_translations_match_the_english_entry_for_entry(lang):
    en, m = D.material("en"), D.material(lang)
    for key in ("subjects", "predicates", "endings"):
        assert len(m[key]) == len(en[key]), key
        assert len(set(m[key])) == len(m[key]), key
        assert all(w.strip() == w and w for w in m[key])
    assert set(m["math"]) == set(en["math"])
    for op, phrases in m["math"].items():
        assert len(phrases) == len(en["math"][op])
        assert all(_placeholders(p) == ["{a}", "{b}"] for p in phrases)
    assert set(m["kinds"]) == set(en["kinds"]) == set(D.KINDS) - {"math"}
    for kind, text in m["kinds"].items():
        assert _placeholders(text) == _placeholders(en["kinds"][kind]), kind
        assert text != en["kinds"][kind], f"{kind} is not translated"
    assert set(m["formats"]) == set(en["formats"])
    for name, (template, lead) in m["formats"].items():
        assert _placeholders(template) == ["{q}"] and lead == en["formats"][name][1]
    assert m["yes"] != m["no"]


def test_an_unknown_language_is_refused():
    with pytest.raises(ValueError, match="no instruction material in 'de'"):
        D.material("de")


def test_the_multilingual_stream_takes_the_languages_in_turn_with_the_same_draws():
    batch = D.MULTILINGUAL.examples(0, 0, 300)
    assert [e["language"] for e in batch[:6]] == ["en", "fr", "es", "en", "fr", "es"]
    for i, e in enumerate(batch):
        english = D.example(0, i)
        assert (e["kind"], e["format"]) == (english["kind"], english["format"])
        if e["kind"] in ("math", "larger"):    # the same numbers in any language
            assert e["answer"].strip() == english["answer"].strip()
        if e["language"] != "en":
            assert e["prompt"] != english["prompt"]
    # resuming mid-stream gives the same examples
    assert D.MULTILINGUAL.examples(0, 150, 10) == batch[150:160]
    assert D.MULTILINGUAL.version()["languages"] == ["en", "fr", "es"]
