"""Chapter 6's zero-shot scoring: predictions, bad input, a real run, and the stored results."""
import numpy as np
import pandas as pd
import pytest

from cpbook.llm import models, paired, runner, tasks, zero_shot as Z
from cpbook.params import ParameterError
from conftest import make_tiny, sample_seed

FOLDER = tasks.RESULTS / tasks.TASKS["nli"].folder
STORED = sorted(p.name[:-len(".json")] for p in FOLDER.glob("*.json") if not p.name.endswith(".tuning.json"))


@pytest.mark.parametrize("continuation, expected", [
    (" True.", "entailment"), ("True", "entailment"), (" Neither, because", "neutral"),
    (" false", "none"), (" It is true", "none"), ("", "none"),
])
def test_greedy_prediction_is_the_label_word_the_continuation_starts_with(continuation, expected):
    options = {"entailment": " True", "neutral": " Neither", "contradiction": " False"}
    assert Z.greedy_prediction(continuation, options) == expected


def test_the_longest_matching_option_wins():
    assert Z.greedy_prediction(" Aucun des deux", {"a": " Aucun", "b": " Aucun des deux"}) == "b"


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model was loaded"))


CH6 = dict(base="gemma-3-270m", tuned=["gemma-3-270m-code", "gemma-3-270m-code-strong"],
           cross_family=["qwen2.5-coder-0.5b-instruct"], tasks=["nli"], languages=["en", "fr"], reference="en")


@pytest.mark.parametrize("values, match", [
    ({"tuned": ["gemma-3-270m-code-xl"]}, "unknown model 'gemma-3-270m-code-xl'"),
    ({"tasks": ["nli", "xnli"]}, "parameter 'tasks'"),
    ({"languages": ["en", "ja"]}, "parameter 'languages'"),
    ({"reference": "de"}, "'reference'"),
    ({"cross_family": ["gemma-3-270m-code"]}, "name a model twice"),
])
def test_chapter_6_parameters_are_checked_before_any_work(values, match, no_loading):
    with pytest.raises((ParameterError, ValueError), match=match):
        tasks.check_code_chapter(**{**CH6, **values})


def test_a_run_scores_every_option(tmp_path, monkeypatch):
    """A small run on a tiny random model (the real models are checked against the stored rows
    below): three NLI items in two languages, into a scratch folder."""
    tiny = make_tiny()
    monkeypatch.setattr(models, "load", lambda spec: tiny)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    data = Z.dataset("nli")
    small = {**data, "items": data["items"][:3]}
    monkeypatch.setattr(Z, "dataset", lambda task: small)
    nli = tasks.TASKS["nli"]
    table = runner.run(nli, nli.make_run("smollm2-135m-instruct", languages=("en", "de")), out_dir=tmp_path / "out",
                       progress=False)
    assert len(table) == 6
    lik = table[[f"loglik_{o}" for o in Z.OPTIONS["nli"]]]
    assert (lik < 0).all().all()
    assert (table["pred_loglik"] == [Z.OPTIONS["nli"][i] for i in lik.to_numpy().argmax(1)]).all()


# --- the stored results -------------------------------------------------------------------------

@pytest.mark.parametrize("stem", STORED)
def test_stored_results_are_complete_and_consistent(stem):
    model, task = stem.rsplit(".", 1)
    table, record = runner.load(tasks.TASKS[task], model)
    assert record["model"] == model and record["run"]["task"] == task
    assert record["commit"] != "unknown" and not record["commit"].endswith("+dirty"), record["commit"]
    assert record["checksum"] and {"torch", "transformers"} <= set(record["versions"])
    assert record["run"]["data_version"] == Z.dataset(task)["version"]
    n_items = len(Z.dataset(task)["items"])
    assert len(table) == n_items * len(record["run"]["languages"])
    assert not table.duplicated(list(tasks.TASKS[task].key)).any()
    options = Z.OPTIONS[task]
    lik = table[[f"loglik_{o}" for o in options]]
    assert (lik < 0).all().all()
    assert (table["pred_loglik"] == [options[i] for i in lik.to_numpy().argmax(1)]).all()
    assert (table["correct_loglik"] == (table["pred_loglik"] == table["label"])).all()
    labels = {it["id"]: it["label"] if task == "nli" else f"choice{it['correct']}" for it in Z.dataset(task)["items"]}
    assert (table["label"] == table["id"].map(labels)).all()
    if task == "nli":
        assert (table["correct_greedy"] == (table["pred_greedy"] == table["label"])).all()


@pytest.mark.parametrize("stem", STORED)
def test_a_random_sample_of_stored_rows_recomputes(stem):
    """CI's agreement check, for every stored model that can be loaded here without installing or
    training anything (SmolLM2 in CI; the Gemma models after `make models`)."""
    model, task = stem.rsplit(".", 1)
    if not tasks.check_model(model).ready():
        pytest.skip(f"{model} is not installed or not tuned on this machine")
    seed = sample_seed(f"stored rows of {stem}")
    stored, record = runner.load(tasks.TASKS[task], model)
    cmp = runner.recompute(tasks.TASKS[task], stored, record, 12, np.random.default_rng(seed))
    where = f"(CPBOOK_TEST_SEED={seed})"
    assert len(cmp) == 12
    assert (cmp["pred_loglik_stored"] == cmp["pred_loglik_now"]).all(), where
    for o in Z.OPTIONS[task]:
        assert ((cmp[f"loglik_{o}_stored"] - cmp[f"loglik_{o}_now"]).abs() < 1e-3).all(), (o, where)
    if task == "nli":
        assert (cmp["continuation_stored"] == cmp["continuation_now"]).all(), where


# --- the paired statistics on hand-made rows ----------------------------------------------------

def _rows(values, group="en"):
    return pd.DataFrame({"language": group, "id": [f"i{k}" for k in range(len(values))], "correct": values})


def test_differences_are_paired_by_item():
    a = pd.concat([_rows([1, 1, 1, 0]), _rows([1, 0, 1, 0], "fr")])
    b = pd.concat([_rows([0, 0, 1, 0]), _rows([1, 0, 1, 0], "fr")])
    table = paired.difference_table(a, b, "correct", "language").set_index("language")
    assert table.loc["en", "difference"] == 0.5 and table.loc["fr", "difference"] == 0
    assert table.loc["fr", "low"] == table.loc["fr", "high"] == 0     # identical pairs: no spread
    gap = paired.gap_vs_reference(a, b, "correct", "language", "en").set_index("language")
    assert gap.loc["fr", "difference"] == 0.5
    with pytest.raises(ValueError, match="same items"):
        paired.difference_table(a, b.iloc[1:], "correct", "language")


def test_acc_norm_divides_by_the_options_length_in_characters():
    """French NLI options: ' Vrai' (4 characters), ' Faux' (4), ' Aucun des deux' (14). Summed,
    the long option loses at -5 against -4; per character it wins (-0.36 against -1)."""
    item = Z.prompt_table("nli", "fr").iloc[[0]]
    rows = item[["task", "language", "id", "label"]].assign(
        loglik_entailment=-4.0, loglik_contradiction=-4.5, loglik_neutral=-5.0)
    out = Z.with_norm(rows, "nli")
    assert out["pred_norm"].iloc[0] == "neutral"
    assert out["correct_norm"].iloc[0] == (item["label"].iloc[0] == "neutral")
    # the summed score's choice on the same row, as score_rows makes it
    assert rows[["loglik_entailment", "loglik_neutral", "loglik_contradiction"]].to_numpy().argmax() == 0


def test_the_chapter_reads_acc_norm_beside_the_summed_score():
    results, _ = Z.load_chapter("gemma-3-270m", ["gemma-3-270m-code"], [], ["nli"], ["en", "fr"], "en")
    rows = results["nli"]["gemma-3-270m"]
    assert {"pred_norm", "correct_norm"} <= set(rows.columns) and "norm" in Z.scorers("nli")
    # the options differ in length, so the two scorers disagree on some items
    assert (rows["pred_norm"] != rows["pred_loglik"]).any()
