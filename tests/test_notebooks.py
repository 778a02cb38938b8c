"""Checks on the chapters themselves: fit for nbval and the book, and bad parameters stop them
before any work is done."""
from pathlib import Path

import papermill as pm
import pytest

from cpbook.cli import chapters, main, parameters_of
from cpbook.notebooks import problems
from cpbook.synthetic.chapter import BEYOND_SPECS, CONJUGATE_SPECS, G_SPECS
from cpbook.synthetic.config import FT_SPECS, SPECS

CHAPTERS = sorted(chapters().values())
REPO = Path(__file__).resolve().parents[1]


def test_the_book_has_chapters_and_the_toc_lists_each():
    toc = (REPO / "_toc.yml").read_text()
    assert CHAPTERS
    for path in CHAPTERS:
        assert f"book/{path.stem}" in toc, path.stem


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_clean_executed_and_parameterised(path):
    assert problems(path) == []


EXPECTED_PARAMETERS = {
    "01_pretraining": set(SPECS),
    "02_forgetting": set(SPECS) | set(FT_SPECS) | set(BEYOND_SPECS),
    "03_task_inference": set(SPECS) | set(FT_SPECS) | set(G_SPECS),
    "04_conjugate_prompting": set(SPECS) | set(FT_SPECS) | set(CONJUGATE_SPECS),
}


def test_synthetic_chapters_take_exactly_the_declared_parameters():
    for path in CHAPTERS:
        if path.stem in EXPECTED_PARAMETERS:
            assert set(parameters_of(path)) == EXPECTED_PARAMETERS[path.stem], path.stem


@pytest.mark.parametrize("chapter, name, value, words", [
    ("01_pretraining", "alpha", 1.5, ["'alpha'", "[0, 1]"]),
    ("01_pretraining", "steps", -3, ["'steps'", "out of range"]),
    ("01_pretraining", "preset", "laptop", ["'preset'", "'cpu', 'paper'"]),
    ("01_pretraining", "d", 0, ["'d'", "[1, 256]"]),
    ("02_forgetting", "ft_steps", -1, ["'ft_steps'", "out of range"]),
    ("04_conjugate_prompting", "gammas", [1.0, -2.0], ["'gammas'", "out of range"]),
])
def test_bad_parameter_stops_the_first_cell_and_writes_nothing(tmp_path, monkeypatch, chapter, name, value, words):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CPBOOK_CACHE", str(cache))
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(REPO / f"book/{chapter}.ipynb"), str(out), parameters={name: value},
                            cwd=str(REPO / "book"), kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ParameterError"
    for w in words:
        assert w in err.value.evalue
    # it failed in the first code cell after the parameters, and nothing reached the cache
    assert err.value.exec_count <= 3
    assert not cache.exists() or not any(cache.rglob("*"))


def test_cli_rejects_an_unknown_parameter_before_starting_a_kernel(capsys):
    with pytest.raises(SystemExit) as err:
        main(["run", "01", "-p", "alpah", "0.3"])
    assert "unknown parameter" in str(err.value) and "alpha" in str(err.value)


def test_cli_rejects_an_unknown_chapter():
    with pytest.raises(SystemExit, match="no chapter"):
        main(["run", "99_nothing"])


def test_a_failed_in_place_rerun_leaves_the_stored_chapter_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    stored = REPO / "book/01_pretraining.ipynb"
    before = stored.read_bytes()
    with pytest.raises(pm.PapermillExecutionError):
        main(["run", "01", "--in-place", "-p", "alpha", "1.5"])
    assert stored.read_bytes() == before
    assert not list(stored.parent.glob(".*.running.ipynb"))
    assert (tmp_path / "runs/01_pretraining.failed.ipynb").exists()


@pytest.mark.parametrize("name, value, words", [
    ("tuned", "alpaca-13b", ["unknown model 'alpaca-13b'", "available:"]),
    ("cross_family", ["smollm2-135m-instruct", "gpt-5"], ["unknown model 'gpt-5'"]),
    ("reference", "klingon", ["'klingon'", "available languages"]),
])
def test_chapter_5_rejects_a_bad_model_or_language_in_its_first_cell(tmp_path, name, value, words):
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(REPO / "book/05_icl_vs_instructions.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={name: value}, cwd=str(REPO / "book"), kernel_name="python3",
                            progress_bar=False)
    assert err.value.ename == "ValueError" and err.value.exec_count <= 3
    for w in words:
        assert w in err.value.evalue
