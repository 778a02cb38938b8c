"""Checks on the chapters themselves: fit for nbval and the book, and bad parameters stop them
before any work is done."""
from pathlib import Path

import papermill as pm
import pytest

from cpbook.cli import chapters, main, parameters_of
from cpbook.notebooks import problems
from cpbook.synthetic.config import SPECS

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


def test_synthetic_chapters_take_exactly_the_declared_parameters():
    for path in CHAPTERS:
        if path.stem == "01_pretraining":
            assert set(parameters_of(path)) == set(SPECS)


@pytest.mark.parametrize("name, value, words", [
    ("alpha", 1.5, ["'alpha'", "[0, 1]"]),
    ("steps", -3, ["'steps'", "out of range"]),
    ("preset", "laptop", ["'preset'", "'cpu', 'paper'"]),
    ("d", 0, ["'d'", "[1, 256]"]),
])
def test_bad_parameter_stops_the_first_cell_and_writes_nothing(tmp_path, monkeypatch, name, value, words):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CPBOOK_CACHE", str(cache))
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(REPO / "book/01_pretraining.ipynb"), str(out), parameters={name: value},
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
