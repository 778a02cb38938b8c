"""The hand-authored parallel prompt material and the rule-based prompt transforms."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbook.llm import transforms as t

SENTENCES = t.load_sentences()
TEMPLATES = t.load_templates()


def first_word(sentence: str) -> str:
    return sentence.split()[0].strip(".,;:!?¿¡")


def test_sentence_table_shape_and_ids():
    assert list(SENTENCES.columns) == ["id", *t.LANGUAGES]
    assert len(SENTENCES) >= 200
    assert SENTENCES["id"].is_unique
    assert SENTENCES["id"].str.fullmatch(r"s\d{3}").all()
    assert SENTENCES["en"].is_unique


def test_every_cell_is_one_clean_sentence():
    for lang in t.LANGUAGES:
        for cell in SENTENCES[lang]:
            assert cell.strip() == cell and cell, (lang, cell)
            assert "\t" not in cell and "\n" not in cell and "\r" not in cell, (lang, cell)
            assert cell.endswith("."), (lang, cell)
            assert not any(ch.isdigit() for ch in cell), (lang, cell)
            assert '"' not in cell, (lang, cell)


def test_english_sentences_have_five_to_fourteen_words():
    lengths = SENTENCES["en"].str.split().str.len()
    assert lengths.between(5, 14).all(), SENTENCES["en"][~lengths.between(5, 14)].tolist()


def test_first_word_can_be_blanked_in_every_language():
    # The blank queries replace the first word by underscores and ask for it back, so it must be
    # a real word: alphabetic, at least two letters, not an elided "L'homme" or "J'aime".
    for lang in t.LANGUAGES:
        for cell in SENTENCES[lang]:
            token = cell.split()[0]
            assert "'" not in token and "\u2019" not in token, (lang, cell)
            word = first_word(cell)
            assert word.isalpha() and len(word) >= 2, (lang, cell)


def test_translations_differ_from_english():
    for lang in t.LANGUAGES[1:]:
        same = (SENTENCES[lang] == SENTENCES["en"]).sum()
        assert same <= 0.02 * len(SENTENCES), (lang, same)


def test_templates_cover_every_language_and_key():
    assert tuple(TEMPLATES["languages"]) == t.LANGUAGES
    for lang in t.LANGUAGES:
        assert set(TEMPLATES["instructions"][lang]) == {"repeat", "capslock"}
        assert all(TEMPLATES["instructions"][lang].values())
        assert TEMPLATES["field_input"][lang] and TEMPLATES["field_output"][lang]
        assert set(TEMPLATES["math"][lang]) == {"plus", "minus", "times"}
        for template in TEMPLATES["math"][lang].values():
            assert "{a}" in template and "{b}" in template
            assert "7" in template.format(a=7, b=4) and "4" in template.format(a=7, b=4)


def test_templates_are_translated():
    for lang in t.LANGUAGES[1:]:
        assert TEMPLATES["instructions"][lang] != TEMPLATES["instructions"]["en"]
        assert TEMPLATES["math"][lang] != TEMPLATES["math"]["en"]
        assert TEMPLATES["field_input"][lang] != "Input"
        assert TEMPLATES["field_output"][lang] != "Output"


def test_leetspeak_by_hand():
    assert t.leetspeak("Leetspeak is fun.") == "L3375p34k 15 fun."
    assert t.leetspeak("Sister Tina eats toast!") == "51573r 71n4 3475 70457!"
    # Unmapped letters, digits, accents and punctuation pass through.
    assert t.leetspeak("Why, my café? 42") == "Why, my c4f\u00e9? 42"


def test_pig_latin_by_hand():
    assert t.pig_latin("The cat sat on the mat.") == "Ethay atcay atsay onyay ethay atmay."
    assert t.pig_latin("Quiet streets, yellow apples!") == "Ietquay eetsstray, ellowyay applesyay!"
    assert t.pig_latin("rhythm") == "ythmrhay"  # y after a consonant acts as the vowel
    assert t.pig_latin("Apple") == "Appleyay"


def test_pig_latin_keeps_numbers_symbols_and_spacing():
    assert t.pig_latin("We have 3 dogs.") == "Eway avehay 3 ogsday."
    assert t.pig_latin("(hello),  ___ world") == "(ellohay),  ___ orldway"
    assert t.pig_latin("") == ""


def test_transforms_are_registered_and_rewrite_every_sentence_word_by_word():
    # The transformed surfaces are English sentences in disguise: every one must change, keep its
    # words (one transformed word per word) and its final full stop.
    for name, fn in t.TRANSFORMS.items():
        assert t.check_transform(name) == name
        for text in SENTENCES["en"]:
            out = fn(text)
            assert out != text and len(out.split()) == len(text.split()) and out.endswith("."), (name, text, out)
    assert set(t.TRANSFORMS) == {"leetspeak", "pig_latin"}


def test_unknown_names_list_what_is_available():
    assert t.check_language("hu") == "hu"
    with pytest.raises(ValueError, match="en, fr, es, nl, hu, de"):
        t.check_language("klingon")
    with pytest.raises(ValueError, match="leetspeak, pig_latin"):
        t.check_transform("rot13")


EDGE_CASES = ["", "   ", "Hello, world!", "¿Qué tal? Très bien — merci.", "Naïve café déjà-vu.",
              "It's 7 plus 12, or 19.", "He said \"go\" (twice); then left...", "ÉCOLE 2024 über",
              "e-mail x-ray 3.14 100%", "Tab\tand\nnewline"]


@pytest.mark.parametrize("name", ["leetspeak", "pig_latin"])
@pytest.mark.parametrize("text", EDGE_CASES)
def test_transforms_keep_words_numbers_and_spacing_on_hard_input(name, text):
    """Punctuation, accents, numbers, empty input: every transform keeps the whitespace exactly
    (so the word count) and every number, and maps empty input to empty output."""
    fn = t.TRANSFORMS[name]
    out = fn(text)
    assert re.findall(r"\s+", out) == re.findall(r"\s+", text)
    assert len(out.split()) == len(text.split())
    if name == "pig_latin":     # leetspeak writes letters as digits, so only Pig Latin keeps them alone
        assert re.findall(r"\d+", out) == re.findall(r"\d+", text)
    else:
        assert all(d in out for d in re.findall(r"\d+", text))
    assert fn("") == ""


@pytest.mark.parametrize("name", ["leetspeak", "pig_latin"])
def test_transforms_on_random_text_are_deterministic_and_keep_spacing_and_numbers(name):
    """Hypothesis: any text (accents, punctuation, digits, odd whitespace) comes out the same on
    every call, with its whitespace exactly where it was; Pig Latin keeps every number as it is."""
    fn = t.TRANSFORMS[name]

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
    def check(text):
        out = fn(text)
        assert fn(text) == out
        assert re.findall(r"\s+", out) == re.findall(r"\s+", text)
        if name == "pig_latin":
            assert re.findall(r"\d+", out) == re.findall(r"\d+", text)

    check()
