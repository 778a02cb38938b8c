"""Chapter 8's language-model statistics on hand-made rows: comparisons of two tunings paired by
prompt, the difference in differences, the dose table, and the trigram similarity."""
import numpy as np
import pandas as pd
import pytest

from cpbook.llm import instruct_data, runner
from cpbook.llm import suppression as S


def _rows(surfaces, correct, margin, control=False, n=40):
    """Rows of one model: every surface gets the same n questions, with icl_correct = correct(s, i)
    and margin = margin(s, i)."""
    out = []
    for s in surfaces:
        for i in range(n):
            out.append({"surface": s, "task_pair": "repeat|math" if i % 2 else "capslock|blank", "index": i,
                        "control": control, "icl_correct": bool(correct(s, i)), "if_correct": False,
                        "margin": float(margin(s, i)), "margin_per_token": float(margin(s, i)) / 2})
    return pd.DataFrame(out)


SURFACES = ["en", "fr", "nl"]


def test_two_tunings_are_compared_paired_by_prompt():
    base = _rows(SURFACES, lambda s, i: True, lambda s, i: 3.0 + i % 3)
    # a: English loses 2 nats; b: English and French lose 2, Dutch 1
    a = _rows(SURFACES, lambda s, i: s != "en", lambda s, i: 3.0 + i % 3 - (2 if s == "en" else 0))
    b = _rows(SURFACES, lambda s, i: s == "nl", lambda s, i: 3.0 + i % 3 - {"en": 2, "fr": 2, "nl": 1}[s])
    c = S.compare_tunings(base, a, b, SURFACES).set_index("surface")
    assert c.loc["en", "margin_shift_a"] == pytest.approx(2) and c.loc["fr", "margin_shift_b"] == pytest.approx(2)
    assert c.loc["fr", "margin_shift_diff"] == pytest.approx(2) and c.loc["nl", "margin_shift_diff"] == pytest.approx(1)
    assert c.loc["fr", "drop_diff"] == pytest.approx(100) and c.loc["en", "drop_diff"] == pytest.approx(0)
    # a paired difference with no spread has a zero-width interval
    assert c.loc["fr", "margin_shift_diff_low"] == pytest.approx(c.loc["fr", "margin_shift_diff_high"])

    spread = S.spread_test(base, a, b, ["fr"], ["nl"])
    assert spread["English-only"].mean == pytest.approx(0)         # a moved neither fr nor nl
    assert spread["multilingual"].mean == pytest.approx(1)         # b moved fr 2, nl 1
    assert spread["multilingual minus English-only"].mean == pytest.approx(1)


def test_the_dose_table_and_the_overwriting_dose(monkeypatch):
    class Source:
        def __init__(self, lr):
            self.lr = lr

        def config(self):
            return self

    lrs = {"gentle": 1e-4, "strong": 1e-3}
    monkeypatch.setattr(S, "check_model", lambda name: type("Spec", (), {"source": Source(lrs[name])}))
    base = pd.concat([_rows(SURFACES, lambda s, i: True, lambda s, i: 2.0),
                      _rows(SURFACES, lambda s, i: True, lambda s, i: np.nan, control=True)])
    results = {"base": base,
               "gentle": pd.concat([_rows(SURFACES, lambda s, i: i % 2, lambda s, i: 0.0),
                                    _rows(SURFACES, lambda s, i: True, lambda s, i: np.nan, control=True)]),
               "strong": pd.concat([_rows(SURFACES, lambda s, i: False, lambda s, i: -5.0),
                                    _rows(SURFACES, lambda s, i: i % 4, lambda s, i: np.nan, control=True)])}
    table = S.dose_table(results, "base", ["strong", "gentle"], SURFACES)
    en = table[table["surface"] == "en"].set_index("model")
    assert en.loc["gentle", "conflict_drop"] == pytest.approx(50) and en.loc["strong", "conflict_drop"] == pytest.approx(100)
    assert en.loc["gentle", "control_drop"] == pytest.approx(0) and en.loc["strong", "control_drop"] == pytest.approx(25)
    assert en.loc["strong", "margin_shift"] == pytest.approx(7)
    over = S.overwriting_table(results, "base", ["strong", "gentle"], table)
    assert list(over.index) == ["gentle", "strong"]                 # in order of learning rate
    assert S.overwriting_dose(over) == "strong"
    assert S.overwriting_dose(over.loc[["gentle"]]) is None


def test_trigram_similarity_finds_the_nearest_tuning_example():
    index = S.TrigramIndex(["Input: What is 3 plus 4?\nOutput: 7", "Repeat this sentence: the cat sleeps."])
    sims = index.nearest(["Input: What is 3 plus 4?\nOutput: 7", "Input: What is 5 plus 9?\nOutput:",
                          "Combien font 5 plus 9 ?", "zzzz qqqq"])
    assert sims[0] == pytest.approx(1.0)
    assert 1.0 > sims[1] > sims[2] > sims[3] >= 0
    assert sims[3] == pytest.approx(0.0)
    assert S.query_block("Capitalize.\n\nInput: a\nOutput: A\n\nInput: b\nOutput:") == "Input: b\nOutput:"


def test_rank_correlation_over_a_surface_and_within_task_pairs():
    rows = pd.DataFrame({"surface": "en", "task_pair": ["a"] * 50 + ["b"] * 50, "index": range(100),
                         "similarity": np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)],
                         # higher for the second task pair, but decreasing in similarity inside each
                         "margin_shift": np.r_[np.linspace(1, 0, 50), np.linspace(3, 2, 50)]})
    whole = S.rank_correlation(rows, n_boot=200).iloc[0]
    within = S.rank_correlation(rows, within="task_pair", n_boot=200).iloc[0]
    assert whole["correlation"] > 0.5 and whole["low"] > 0
    assert within["correlation"] == pytest.approx(-1.0)


def test_a_stored_model_is_read_against_the_data_it_was_tuned_on():
    """Chapter 8's siblings were tuned on instruction data version 2 (their tuning records say
    so); the similarity reads that text, not the decontaminated version 3 the registry now tunes on."""
    record = runner.tuning_record("icl", "gemma-3-270m-instruct-en-fr-es")
    assert record["data_version"]["instruct_data_version"] == 2
    texts = S.tuning_texts("gemma-3-270m-instruct-en-fr-es")
    assert len(texts) == record["config"]["steps"] * record["config"]["batch_size"]
    assert any(t.startswith("Input: ") for t in texts) and any(t.startswith("Entrée: ") for t in texts)
    now = [e["prompt"] + e["answer"] for e in instruct_data.MULTILINGUAL.examples(0, 0, len(texts))]
    assert texts != now and not any(t.startswith("Input: ") for t in now)
