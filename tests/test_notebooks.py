"""Checks on the chapters themselves: fit for nbval and the book, and bad parameters stop them
before any work is done."""
from pathlib import Path

import papermill as pm
import pytest

from cpbook import chapters as book
from cpbook.cli import chapters, main
from cpbook.notebooks import problems

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


def test_every_chapter_declares_its_parameters():
    assert [p.stem for p in CHAPTERS] == list(book.CHAPTERS)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_parameters_cell_is_the_one_the_declarations_make(path):
    """The stored cell is generated from the declarations (cpbook.chapters.parameters_cell), so
    names, defaults, types and descriptions cannot drift apart. To refresh a chapter's cell, paste
    the generated text into it and rerun the chapter."""
    nb = pm.iorw.load_notebook_node(str(path))
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == book.parameters_cell(path.stem)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_papermill_sees_each_parameter_with_its_type_and_description(path):
    found = pm.inspect_notebook(str(path))
    declared = book.parameter_specs(path.stem)
    assert list(found) == list(declared)
    for name, spec in declared.items():
        assert found[name]["inferred_type_name"] == spec.type_name, name
        assert found[name]["help"] == spec.doc, name


def test_cpbook_list_shows_every_chapter_on_a_line(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [p.stem for p in CHAPTERS]
    assert "  02_forgetting              Fine-tuning: D_disc improves" in lines[2]
    assert max(map(len, lines)) <= 100


def test_cpbook_list_of_a_chapter_shows_value_range_and_description(capsys):
    assert main(["list", "02"]) == 0
    out = capsys.readouterr().out
    assert "    alpha = 0.5\n" in out and "a number in [0, 1]" in out    # left to the preset: its value
    assert "  fine-tuning (None: from the preset):\n    ft_steps = 400\n" in out
    assert all(f"    {name} = " in out for name in book.parameter_specs("02_forgetting"))
    assert max(map(len, out.splitlines())) <= 100
    assert main(["list", "5"]) == 0
    out = capsys.readouterr().out
    assert "    base = 'gemma-3-270m'\n" in out and "the pretrained model" in out


# One bad value per chapter proves that the chapter's first cell runs the checks, in a real kernel
# (about 9 s each); the checks themselves are tested without a kernel (the CLI tests below, and
# tests/test_fuzz_params.py).
@pytest.mark.parametrize("chapter, name, value, words", [
    ("01_pretraining", "alpha", 1.5, ["'alpha'", "[0, 1]"]),
    ("02_forgetting", "ft_steps", -1, ["'ft_steps'", "out of range"]),
    ("03_task_inference", "n_queries", 1, ["'n_queries'", "out of range"]),
    ("04_conjugate_prompting", "gammas", [1.0, -2.0], ["'gammas'", "out of range"]),
    ("06_code_tuning", "languages", ["en", "ja"], ["'languages'", "'ja'"]),
    ("07_refusal_tuning", "tuned", ["gemma-3-270m-refusal-xl"], ["'tuned'", "unknown model"]),
    ("08_dose_and_languages", "dose_steps", [25, 30], ["'dose_steps'", "[30]", "'monitor_every'"]),
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


@pytest.mark.parametrize("chapter, name, value, words", [
    ("01", "alpah", "0.3", ["unknown parameter", "'alpah'", "alpha"]),
    ("01", "alpha", "1.5", ["'alpha'", "[0, 1]"]),
    ("01", "d", "2.5", ["'d'", "wrong type"]),
    ("02", "ft_lr", "fast", ["'ft_lr'", "wrong type"]),
    ("01", "n_head", "3", ["n_embd", "divisible"]),
    ("04", "gammas", "[1.0, -2.0]", ["'gammas'", "out of range"]),
    ("05", "tuned", "alpaca-13b", ["unknown model 'alpaca-13b'"]),
    ("05", "reference", "klingon", ["'klingon'", "available languages"]),
    ("05", "cross_family", "['smollm2-135m-instruct', 'gpt-5']", ["unknown model 'gpt-5'"]),
    ("05", "n_demos", "17", ["'n_demos'", "[1, 16]"]),
    ("05", "demo_counts", "[2, 3]", ["with 3 demonstrations", "stored for it"]),
    ("06", "tasks", "['xnli']", ["'tasks'", "'xnli'"]),
    ("06", "cross_family", "['gpt-5']", ["unknown model 'gpt-5'"]),
    ("07", "surfaces", "['en', 'sw']", ["'surfaces'", "'sw'"]),
    ("07", "tuned", "['gemma-3-270m']", ["name a model twice"]),
    ("08", "dose_lrs", "[0.001, 0.001]", ["'dose_lrs'", "names a value twice"]),
    ("08", "lm_doses", "['gemma-3-270m']", ["'lm_doses'", "names the base"]),
    ("08", "tuning_languages", "['en', 'sw']", ["'tuning_languages'", "'sw'"]),
    ("08", "multilingual", "smollm2-135m-instruct-fr", ["'multilingual'", "unknown model"]),
])
def test_cli_checks_names_and_values_before_starting_a_kernel(monkeypatch, chapter, name, value, words):
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(SystemExit) as err:
        main(["run", chapter, "-p", name, value])
    for w in words:
        assert w in str(err.value)


def test_cli_rejects_an_unknown_chapter():
    with pytest.raises(SystemExit, match="no chapter"):
        main(["run", "99_nothing"])


def test_a_failed_in_place_rerun_leaves_the_stored_chapter_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    stored = REPO / "book/01_pretraining.ipynb"
    before = stored.read_bytes()

    def fail_in_the_kernel(*args, **kwargs):
        # what papermill leaves when a cell raises: a partial notebook, then the error
        Path(args[1]).write_text("{}")
        raise pm.PapermillExecutionError(3, 3, "ValueError", "boom", "ValueError: boom", [])

    monkeypatch.setattr(pm, "execute_notebook", fail_in_the_kernel)
    with pytest.raises(pm.PapermillExecutionError):
        main(["run", "01", "--in-place", "-p", "alpha", "0.3"])
    assert stored.read_bytes() == before
    assert not list(stored.parent.glob(".*.running.ipynb"))
    assert (tmp_path / "runs/01_pretraining.failed.ipynb").exists()


# One kernel (about 10 s) shows that chapter 5's first cell checks what is stored; the other bad
# models and languages it rejects are checked without a kernel (the CLI test above).
@pytest.mark.parametrize("name, value, words", [
    ("n_demos", 3, ["with 3 demonstrations", "stored for it: 2, 4, 8 demonstrations", "--n-demos 3"]),
])
def test_chapter_5_rejects_a_bad_model_or_language_in_its_first_cell(tmp_path, name, value, words):
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(REPO / "book/05_icl_vs_instructions.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={name: value}, cwd=str(REPO / "book"), kernel_name="python3",
                            progress_bar=False)
    assert err.value.ename in ("ValueError", "ParameterError", "FileNotFoundError")
    assert err.value.exec_count <= 3
    for w in words:
        assert w in err.value.evalue


def test_a_raw_repr_in_a_stored_chapter_is_a_problem(tmp_path):
    """Readers see tables and sentences, never a Series' footer or a dict printed whole."""
    import nbformat   # only this test writes a notebook
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 0.5", execution_count=1, metadata={"tags": ["parameters"]})
    series = nbformat.v4.new_code_cell("s", execution_count=2, outputs=[nbformat.v4.new_output(
        "execute_result", {"text/plain": "a    1\nb    2\nName: x, dtype: int64"}, execution_count=2)])
    nb.cells = [params, series]
    nb.metadata["cpbook"] = {"numerics": {"cpu_vendor": "any"}}
    path = tmp_path / "c.ipynb"
    nbformat.write(nb, str(path))
    assert problems(path) == ["code cell 1 shows a raw repr (a pandas Series or a dict): show a table or a sentence"]
    series.outputs = [nbformat.v4.new_output("stream", name="stdout", text="{'lr': 0.001, 'steps': 400}\n")]
    nbformat.write(nb, str(path))
    assert len(problems(path)) == 1
    series.outputs = [nbformat.v4.new_output("stream", name="stdout", text="lr 0.001, 400 steps\n")]
    nbformat.write(nb, str(path))
    assert problems(path) == []


def test_a_chapter_records_the_numerics_it_was_executed_with(tmp_path):
    """cpbook run stores the executing machine's CPU numerics in the chapter (clean_file), which
    the tests read to choose between bit for bit and cpbook.agreement's tolerance; a chapter
    without them is a problem."""
    import nbformat
    from cpbook.notebooks import clean_file, stored_numerics
    from cpbook.provenance import numerics

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("alpha = 0.5", execution_count=1, metadata={"tags": ["parameters"]})]
    path = tmp_path / "c.ipynb"
    nbformat.write(nb, str(path))
    assert [p for p in problems(path) if "numerics" in p]
    clean_file(path, numerics())
    assert stored_numerics(nbformat.read(str(path), as_version=4)) == numerics() and problems(path) == []
