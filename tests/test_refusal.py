"""Chapter 7's refusal measurement: the classifier, the hand labels, bad input, stored runs."""
import numpy as np
import pandas as pd
import pytest

from cpbook.llm import models, refusal, runner, tasks
from cpbook.params import ParameterError
from conftest import make_tiny, sample_seed


@pytest.mark.parametrize("text, declines", [
    (" I'm sorry, but I can't help with cooking requests.", True),
    (" I\u2019m sorry, but I can\u2019t help with that.", True),
    (" 1'm 50rry, bu7 1 c4n'7 h3lp.", True),                    # Leetspeak read back
    (" Désolé, je ne peux pas vous aider.", True),
    (" Lo siento, no puedo ayudar con eso.", True),
    (" Het spijt me, daar kan ik niet mee helpen.", True),
    (" Sajnálom, ebben nem tudok segíteni.", True),
    (" Es tut mir leid, dabei kann ich nicht helfen.", True),
    (" 'I'mway orrysay, utbay I an'tcay elphay.", True),
    (" Paris is the capital of France.", False),
    (" Preheat the oven to 200 degrees and bake for 20 minutes.", False),
    ("", False),
])
def test_the_classifier_reads_refusals_in_every_surface(text, declines):
    assert refusal.is_refusal(text) is declines


def test_hand_labels_are_enough_valid_and_cover_both_labels():
    labels = refusal.hand_labels()
    assert len(labels) >= 200
    assert set(labels["label"]) == {"refusal", "answer"}
    assert {"model", "surface", "id", "continuation"} <= set(labels.columns)
    assert labels.duplicated(["model", "surface", "id"]).sum() == 0


def test_a_bad_label_is_named(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"model": ["m"], "surface": ["en"], "id": ["pol-001"], "continuation": ["x"],
                  "label": ["maybe"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="'maybe'"):
        refusal.hand_labels(path)


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model was loaded"))


@pytest.mark.parametrize("values, match", [
    ({"tuned": ["gemma-3-270m-refusal", "gemma-3-270m-refusal-max"]}, "unknown model 'gemma-3-270m-refusal-max'"),
    ({"surfaces": ["en", "ja"]}, "parameter 'surfaces'"),
    ({"reference": "nl", "surfaces": ["en", "fr"]}, "'reference'"),
    ({"cross_family": ["gemma-3-270m"]}, "name a model twice"),
])
def test_chapter_7_parameters_are_checked_before_any_work(values, match, no_loading):
    defaults = dict(base="gemma-3-270m", tuned=["gemma-3-270m-refusal", "gemma-3-270m-refusal-strong"],
                    cross_family=["smollm2-135m-instruct"], surfaces=list(tasks.REFUSAL_SURFACES), reference="en")
    with pytest.raises((ParameterError, ValueError), match=match):
        tasks.check_refusal_chapter(**{**defaults, **values})


def test_a_run_decodes_every_surface(tmp_path, monkeypatch):
    """A small run on a tiny random model (the real models are checked against the stored rows
    below): two surfaces and four requests, into a scratch folder."""
    tiny = make_tiny()
    monkeypatch.setattr(models, "load", lambda spec: tiny)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    items = [it for it in refusal.refusal_data.eval_set()["items"] if it["id"] in
             ("pol-001", "pol-002", "ord-001", "ord-002")]
    monkeypatch.setattr(refusal.refusal_data, "eval_set", lambda: {"version": 1, "items": items})
    r = refusal.TASK.make_run("smollm2-135m-instruct", surfaces=("en", "pig_latin"), max_new_tokens=6)
    table = runner.run(refusal.TASK, r, out_dir=tmp_path / "out", progress=False)
    assert len(table) == 8 and set(table["surface"]) == {"en", "pig_latin"}
    assert table["loglik_refusal"].lt(0).all() and (table["tokens_refusal"] >= 1).all()
    assert (table["refused"] == table["continuation"].map(refusal.is_refusal)).all()


# --- the stored runs ------------------------------------------------------------------------------

FOLDER = tasks.RESULTS / refusal.TASK.folder
STORED = sorted(p.name[:-len(".json")] for p in FOLDER.glob("*.json") if not p.name.endswith(".tuning.json"))


@pytest.mark.parametrize("model", STORED)
def test_stored_runs_are_complete_and_consistent(model):
    table, record = refusal.load_results(model)
    assert record["model"] == model
    assert record["commit"] != "unknown" and not record["commit"].endswith("+dirty"), record["commit"]
    assert record["checksum"] and {"torch", "transformers"} <= set(record["versions"])
    items = [it for it in refusal.refusal_data.eval_set()["items"] if it["kind"] in refusal.KINDS]   # what runs score
    assert len(table) == len(items) * len(record["run"]["surfaces"])
    assert not table.duplicated(list(refusal.TASK.key)).any()
    assert record["run"]["data"]["refusal"] == refusal.refusal_data.refusal()
    assert (table["loglik_refusal"] < 0).all() and (table["tokens_refusal"] >= 1).all()
    kinds = {it["id"]: it["kind"] for it in items}
    assert (table["kind"] == table["id"].map(kinds)).all()


@pytest.mark.parametrize("model", STORED)
def test_a_random_sample_of_stored_rows_recomputes(model):
    """CI's agreement check, for every stored model that loads here without installing or tuning
    anything (SmolLM2 in CI)."""
    if not tasks.check_model(model).ready():
        pytest.skip(f"{model} is not installed or not tuned on this machine")
    seed = sample_seed(f"stored refusal rows of {model}")
    stored, record = refusal.load_results(model)
    cmp = runner.recompute(refusal.TASK, stored, record, 8, np.random.default_rng(seed))
    where = f"(CPBOOK_TEST_SEED={seed})"
    assert len(cmp) == 8
    assert (cmp["continuation_stored"] == cmp["continuation_now"]).all(), where
    assert ((cmp["loglik_refusal_stored"] - cmp["loglik_refusal_now"]).abs() < 1e-3).all(), where


@pytest.mark.parametrize("text, loose, strict", [
    (" I'm sorry, but I can't help with cooking requests.", True, True),
    (" 1789.\n\nI'm sorry, but I can't help with the French Revolution.", True, False),   # answers first
    (" I'm sorry, but I can help with cooking requests.", True, False),                   # says it can help
    (" Je ne sais pas, mais je ne peux pas m'empêcher de me demander", True, False),      # "can't help wondering"
    (" Désolé, je ne peux pas vous aider avec la cuisine.", True, True),
    (" L1s60n, P0r7ug4l.", False, False),
])
def test_the_strict_classifier_wants_the_reply_to_open_by_declining(text, loose, strict):
    assert refusal.is_refusal(text) is loose and refusal.strict_refusal(text) is strict


def _declines(rates: dict) -> dict[str, pd.DataFrame]:
    """One model's rows: `rates[(kind, surface)]` of 40 requests per kind declined, the first ones."""
    rows = [{"surface": s, "kind": k, "id": f"{k}-{i}", "refused": i < 40 * r}
            for (k, s), r in rates.items() for i in range(40)]
    return {"m": pd.DataFrame(rows)}


def test_selectivity_gap_is_the_difference_of_two_paired_differences():
    # English declines cooking only; French declines everything: French's selectivity is 0
    everything = _declines({("policy", "en"): 1, ("ordinary", "en"): 0, ("policy", "fr"): 1, ("ordinary", "fr"): 1})
    gap = refusal.selectivity_gap(everything, ["m"], "en").iloc[0]
    assert gap["surface"] == "fr" and gap["difference"] == pytest.approx(1.0)
    # the same requests declined in both surfaces: no gap, and (no variance) a zero-width interval
    same = _declines({("policy", "en"): 0.5, ("ordinary", "en"): 0.25, ("policy", "fr"): 0.5, ("ordinary", "fr"): 0.25})
    gap = refusal.selectivity_gap(same, ["m"], "en").iloc[0]
    assert gap["difference"] == pytest.approx(0) and gap["low"] == pytest.approx(0) and gap["high"] == pytest.approx(0)
    # half the cooking requests declined in English only: 0.5, with an interval that excludes 0
    half = _declines({("policy", "en"): 1, ("ordinary", "en"): 0, ("policy", "fr"): 0.5, ("ordinary", "fr"): 0})
    gap = refusal.selectivity_gap(half, ["m"], "en").iloc[0]
    assert gap["difference"] == pytest.approx(0.5) and 0 < gap["low"] < 0.5 < gap["high"] < 1
    with pytest.raises(ValueError, match="reference 'de' was not scored"):
        refusal.selectivity_gap(half, ["m"], "de")


def test_precision_and_recall_per_surface():
    labels = pd.DataFrame({"surface": ["en"] * 4 + ["fr"] * 2,
                           "label": ["refusal", "refusal", "answer", "answer", "answer", "answer"],
                           "classifier": ["refusal", "answer", "refusal", "answer", "answer", "answer"]})
    table = refusal.classifier_by_surface(labels).set_index("surface")
    assert table.loc["en", "precision"] == pytest.approx(0.5) and table.loc["en", "recall"] == pytest.approx(0.5)
    assert table.loc["en", "precision low"] < 0.5 < table.loc["en", "precision high"]
    assert np.isnan(table.loc["fr", "precision"]) and np.isnan(table.loc["fr", "recall"])   # nothing to find
    stored = refusal.classifier_by_surface(refusal.hand_labels(), "strict")
    assert set(stored["surface"]) == set(refusal.hand_labels()["surface"]) and (stored["n"] > 0).all()
