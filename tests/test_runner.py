"""The one pipeline of the scored language-model tasks (`cpbook.llm.runner`, `cpbook.llm.tasks`):
every task is checked before any work, stored with its provenance, loaded back, resumed per
group and named the same way; `cpbook score` answers a bad value without loading anything."""
import subprocess
import sys

import pandas as pd
import pytest

from cpbook import cache
from cpbook.llm import models, refusal, registry, runner, zero_shot
from cpbook.llm.tasks import PAPER_DEMOS, TASKS, stored_demos
from cpbook.params import ParameterError
from conftest import make_tiny

# a small run of each task (model smollm2: its placement and BOS are a packaged model's)
SMALL = {"icl": {"surfaces": ("en", "pig_latin"), "n_per_pair": 1, "n_control": 1, "max_new_tokens": 3},
         "nli": {"languages": ("en", "de")},
         "plausibility": {"languages": ("fr",)},
         "refusal": {"surfaces": ("en", "leetspeak"), "max_new_tokens": 4}}


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model was loaded"))


@pytest.fixture
def small_data(monkeypatch):
    """The zero-shot sets and the refusal requests cut to a few items, so a run takes seconds."""
    sets = {t: {**zero_shot.dataset(t), "items": zero_shot.dataset(t)["items"][:3]} for t in ("nli", "plausibility")}
    monkeypatch.setattr(zero_shot, "dataset", lambda task: sets[task])
    items = [it for it in refusal.refusal_data.eval_set()["items"] if it["id"] in ("pol-001", "ord-001")]
    monkeypatch.setattr(refusal.refusal_data, "eval_set", lambda: {"version": 1, "items": items})


@pytest.mark.parametrize("task, options, error, match", [
    ("icl", {"surfaces": ("en", "klingon")}, ValueError, "klingon.*available languages: en"),
    ("icl", {"n_per_pair": 0}, ParameterError, "n_per_pair"),
    ("icl", {"n_demos": 17}, ParameterError, "n_demos"),
    ("nli", {"languages": ("en", "sw")}, ValueError, "unknown zero-shot language 'sw'"),
    ("plausibility", {"batch_size": 0}, ParameterError, "batch_size"),
    ("refusal", {"surfaces": ("en", "ja")}, ValueError, "unknown refusal surface 'ja'"),
    ("refusal", {"max_new_tokens": 0}, ParameterError, "max_new_tokens"),
])
def test_bad_input_fails_before_any_work(task, options, error, match, no_loading, tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    t = TASKS[task]
    with pytest.raises(error, match=match):
        runner.run(t, t.run_type("gemma-3-270m", **dict(t.fixed), **options), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("task", TASKS)
def test_an_unknown_model_is_named_with_the_registered_ones(task, no_loading):
    with pytest.raises(ValueError, match="unknown model 'gpt-5'; available: gemma-3-270m"):
        TASKS[task].make_run("gpt-5")


def test_an_unknown_model_of_any_length_is_shown_short():
    with pytest.raises(ValueError) as err:
        registry.check_model("x" * 100_000)
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("task", TASKS)
def test_missing_results_name_the_score_command(task, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"(?s)no stored .* in {tmp_path.name}/.*cpbook score {task} "
                                                "gemma-3-270m$"):
        runner.load(TASKS[task], "gemma-3-270m", folder=tmp_path)


@pytest.mark.parametrize("task", TASKS)
def test_a_run_is_stored_with_provenance_loaded_back_and_resumed_per_group(task, tmp_path, monkeypatch,
                                                                           small_data):
    tiny = make_tiny()
    monkeypatch.setattr(models, "load", lambda spec: tiny)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    t = TASKS[task]
    r = t.make_run("smollm2-135m-instruct", **SMALL[task])
    table = runner.run(t, r, out_dir=tmp_path / "out", progress=False)
    assert list(table.columns) == list(t.columns) and not table.duplicated(list(t.key)).any()
    groups = getattr(r, t.groups_field)
    assert list(dict.fromkeys(table[t.group])) == list(groups)

    stored, record = runner.load(t, "smollm2-135m-instruct", folder=tmp_path / "out")
    pd.testing.assert_frame_equal(stored, table)
    assert record["run"][t.groups_field] == list(groups) and record["rows"] == len(table)
    assert record["checksum"] == {"gguf_sha256": registry.check_model("smollm2-135m-instruct").source.sha256}
    assert record["model_kind"] == "instruction-tuned" and record["commit"] and record["versions"]["torch"]
    assert t.run_of(record) == r

    # An interrupted run keeps its finished groups: only the missing one is scored again.
    work = next((tmp_path / "cache" / t.work_kind).iterdir())
    (work / f"{groups[-1]}.csv").unlink()
    scored = []
    real = runner.module(t).score_rows
    monkeypatch.setattr(runner.module(t), "score_rows",
                        lambda m, tok, rows, run: scored.append(set(rows[t.group])) or real(m, tok, rows, run))
    again = runner.run(t, r, out_dir=tmp_path / "out", progress=False)
    assert scored == [{groups[-1]}]
    pd.testing.assert_frame_equal(again, table)


def test_a_model_that_cannot_load_leaves_no_work_folder(tmp_path, monkeypatch):
    """The work folder is made once the model has loaded: a missing package (or a hub model not
    here) ends the run with its fix and the cache as it was."""
    def unavailable(spec):
        raise registry.ModelUnavailable("install it")
    monkeypatch.setattr(models, "load", unavailable)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    t = TASKS["icl"]
    with pytest.raises(registry.ModelUnavailable, match="install it"):
        runner.run(t, t.make_run("smollm2-135m-instruct", **SMALL["icl"]), out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_result_files_are_named_for_model_and_demonstrations(tmp_path, monkeypatch):
    """A dotted model name ("qwen2.5-...") or a ".demos3" stem keeps its full name."""
    tiny = make_tiny()
    monkeypatch.setattr(models, "load", lambda spec: tiny)
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    icl, out = TASKS["icl"], tmp_path / "out"
    for n in (PAPER_DEMOS, 3):
        runner.run(icl, icl.make_run("qwen2.5-coder-0.5b-instruct", surfaces=("en",), n_per_pair=1, n_control=0,
                                     max_new_tokens=2, n_demos=n), out_dir=out, progress=False)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "SHA256SUMS") == [
        "qwen2.5-coder-0.5b-instruct.csv", "qwen2.5-coder-0.5b-instruct.demos3.csv",
        "qwen2.5-coder-0.5b-instruct.demos3.json", "qwen2.5-coder-0.5b-instruct.json"]
    assert stored_demos("qwen2.5-coder-0.5b-instruct", out) == [2, 3]
    rows, record = runner.load(icl, "qwen2.5-coder-0.5b-instruct", 3, folder=out)
    assert record["run"]["n_demos"] == 3 and len(rows) == 4
    with pytest.raises(FileNotFoundError, match="(?s)stored for it: 2, 3 demonstrations.*--n-demos 5"):
        runner.load(icl, "qwen2.5-coder-0.5b-instruct", 5, folder=out)
    assert TASKS["nli"].files("qwen2.5-coder-0.5b-instruct", folder=out)[0].name == "qwen2.5-coder-0.5b-instruct.nli.csv"


def test_reading_a_tuned_models_checksum_never_trains_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models.tune, "tune", lambda *a, **k: pytest.fail("a model was tuned"))
    spec = registry.check_model("gemma-3-270m-instruct")
    with pytest.raises(registry.ModelUnavailable, match="cpbook tune gemma-3-270m-instruct"):
        spec.checksum()
    assert not spec.ready()
    # once it is in the cache, its checksum is read from its entry
    folder = cache.build(registry.tune_config.KIND, spec.source.cache_config(),
                         lambda f: {"weights_sha256": {"model.safetensors": "ab" * 32}})
    assert spec.source.folder(spec) == folder
    assert spec.checksum() == {"base_gguf_sha256": registry.check_model("gemma-3-270m").source.sha256,
                               "weights_sha256": {"model.safetensors": "ab" * 32}}


def test_a_tuning_recipe_reads_as_one_line():
    config = {"base": "gemma-3-270m", "batch_size": 8, "data_seed": 0, "dtype": "float32", "init_seed": 1,
              "lora_alpha": 16.0, "lr": 1e-4, "rank": 8, "steps": 100, "warmup_steps": 10}
    assert runner.recipe_text(config) == ("LoRA rank 8 (alpha 16) on gemma-3-270m: 100 steps of 8 examples, lr 0.0001 "
                                          "after 10 warm-up steps, float32, data seed 0, adapter seed 1")
    assert " on gemma-3-270m on refusal: " in runner.recipe_text({**config, "data": "refusal"})


def test_the_provenance_table_shows_a_runs_own_parameters_where_it_has_them():
    base = {"model_kind": "base", "rows": 3, "checksum": {"gguf_sha256": "0123456789abcdef"},
            "commit": "abcdef0123+dirty", "versions": {"torch": "2", "transformers": "5"}}
    table = runner.provenance_table({"a": {**base, "run": {"bos": True, "n_demos": 2, "n_per_pair": 5, "n_control": 1}},
                                     "b.nli": {**base, "run": {"bos": False}}})
    assert table.loc["a", "demonstrations"] == 2 and pd.isna(table.loc["b.nli", "demonstrations"])
    assert table.loc["a", "weights SHA-256"] == "0123456789ab" and table.loc["a", "commit"] == "abcdef0+dirty"


def _cli(*args):
    code = ("import sys\nfrom cpbook import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print(e)\nprint('torch' in sys.modules, 'pandas' in sys.modules)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("args, match", [
    (["score", "icl", "gpt-5"], "cpbook score icl: unknown model 'gpt-5'"),
    (["score", "nli", "gemma-3-270m", "--languages", "en", "sw"], "unknown zero-shot language 'sw'"),
    (["score", "refusal", "gemma-3-270m", "--max-new-tokens", "0"], "'max_new_tokens' = 0 is out of range"),
])
def test_cpbook_score_refuses_bad_values_without_loading_torch(args, match):
    out = _cli(*args)
    assert match in out and out.strip().endswith("False False"), out
