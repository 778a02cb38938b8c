"""How stored outputs are compared on another kind of CPU (cpbook.agreement): the same words,
each number within tolerance; bit for bit where the numerics are the stored ones."""
import subprocess
import sys

import nbformat
import pytest

from cpbook.agreement import ATOL, RTOL, numbers_close, outputs_agree, texts_agree
from cpbook.provenance import numerics, same_numerics


def test_numbers_within_tolerance_agree_and_others_do_not():
    assert numbers_close(1.0, 1.0 + RTOL) and not numbers_close(1.0, 1.0 + RTOL + ATOL + 1e-9)
    assert numbers_close(0.0, ATOL) and not numbers_close(0.0, 2 * ATOL)
    assert texts_agree("<td>0.574</td><td>-0.0010</td>", "<td>0.575</td><td>0.0004</td>") is None
    assert "1.200 now against 0.574" in texts_agree("error 0.574 at k = 1", "error 1.200 at k = 1")
    assert "the text differs" in texts_agree("verdict: partly (0.5)", "verdict: reproduced (0.5)")
    assert texts_agree("a 1 b", "a 1 b 2") == "the text holds 2 numbers now, 1 stored"
    assert texts_agree("table\n  0.5  1.25\n", "table\n 0.55 1.25\n") is None   # columns realigned
    assert "the text differs" in texts_agree("1 step", "1.5 steps")
    assert texts_agree("", "") is None and texts_agree("no numbers", "no numbers") is None
    # a digest is a word: other weights' SHA-256 is not other numbers, and a fraction is no digest
    sha = ("812f8693fb396ba1bf7183e5782662d498882cc68da2ea95107db07e49a829e2",
           "60dc423d2a08249ccc07d28f1f1b74fdf24c3052ec9dd9ca50a59a0d1148e3e5")
    assert texts_agree(f'{{"sha256": "{sha[0]}", "share": 0.83}}', f'{{"sha256": "{sha[1]}", "share": 0.87}}') is None
    assert "now against" in texts_agree("share 0.8261648745519713", "share 1.8261648745519713")


def test_outputs_are_joined_lines_or_compared_whole():
    assert outputs_agree(["k = 1: 0.50\n", "k = 2: 0.25\n"], "k = 1: 0.51\nk = 2: 0.25\n") is None
    assert outputs_agree({"a": 1}, {"a": 1}) is None
    assert outputs_agree({"a": 1}, {"a": 2}) == "the outputs differ (not text)"


def test_same_numerics_needs_every_field():
    now = numerics()
    assert same_numerics(now)
    assert not same_numerics(None) and not same_numerics({})
    assert not same_numerics({**now, "cpu_vendor": "elsewhere"})
    assert not same_numerics({k: v for k, v in now.items() if k != "aten_capability"})


def _notebook(path, printed, stored, made_with):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"print({printed!r})", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored + "\n")]
    nb.cells = [cell]
    if made_with is not None:
        nb.metadata["cpbook"] = {"numerics": made_with}
    nbformat.write(nb, str(path))


CASES = {   # name: (printed now, stored output, numerics stored with it, whether nbval passes)
    "elsewhere_close": ("error 0.575 [0.52, 0.63]", "error 0.574 [0.52, 0.62]", "elsewhere", True),
    "unrecorded_close": ("error 0.575", "error 0.574", None, True),
    "elsewhere_far": ("error 1.200", "error 0.574", "elsewhere", False),
    "elsewhere_words": ("verdict: reproduced 0.5", "verdict: partly 0.5", "elsewhere", False),
    "here_close": ("error 0.575", "error 0.574", "here", False),
}


def test_nbval_compares_bit_for_bit_here_and_within_tolerance_elsewhere(tmp_path):
    """A real nbval run over one-cell notebooks whose stored output differs from what they print."""
    made = {"here": numerics(), "elsewhere": {**numerics(), "cpu_vendor": "elsewhere"}, None: None}
    for name, (printed, stored, made_with, _) in CASES.items():
        _notebook(tmp_path / f"{name}.ipynb", printed, stored, made[made_with])
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "cpbook.agreement", "--nbval",
                          "-p", "no:cacheprovider", "-rA"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    for name, (*_, made_with, passes) in CASES.items():
        assert f"{'PASSED' if passes else 'FAILED'} {name}.ipynb::Cell 0" in run.stdout, (name, run.stdout[-4000:])
    elsewhere_far = run.stdout[run.stdout.index("elsewhere_far.ipynb::Cell 0 _"):]
    assert "other CPU numerics" in elsewhere_far and "1.200 now against 0.574 stored" in elsewhere_far


def test_a_reference_run_on_this_cpu_is_compared_bit_for_bit(tmp_path, monkeypatch):
    """A chapter made elsewhere, also executed here and that run stored (cpbook.references): nbval
    compares with that run bit for bit, far as it is from the stored chapter."""
    from cpbook import references

    monkeypatch.setenv("CPBOOK_REFERENCES", str(tmp_path / "numerics"))
    elsewhere = {**numerics(), "cpu_vendor": "elsewhere"}
    for name, printed in (("referenced", "error 0.900"), ("referenced_off", "error 0.901")):
        _notebook(tmp_path / f"{name}.ipynb", printed, "error 0.574", elsewhere)     # as the book stores it
        (tmp_path / "here").mkdir(exist_ok=True)
        # what this machine printed for the same code: 0.900 (one chapter then prints 0.901 instead)
        _notebook(tmp_path / "here" / f"{name}.ipynb", printed, "error 0.900", numerics())
        references.record(tmp_path / "here" / f"{name}.ipynb", stored=tmp_path / f"{name}.ipynb")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "cpbook.agreement", "--nbval", "-p", "no:cacheprovider",
                          "-rA", "referenced.ipynb", "referenced_off.ipynb"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "PASSED referenced.ipynb::Cell 0" in run.stdout, run.stdout[-3000:]
    assert "FAILED referenced_off.ipynb::Cell 0" in run.stdout
    assert "executed on this kind of CPU" in run.stdout[run.stdout.index("referenced_off.ipynb::Cell 0 _"):]


def test_a_reference_of_other_code_is_refused(tmp_path):
    from cpbook import references

    _notebook(tmp_path / "chapter.ipynb", "a", "a", None)
    (tmp_path / "run").mkdir()
    _notebook(tmp_path / "run" / "chapter.ipynb", "b", "b", numerics())
    with pytest.raises(ValueError, match="does not run the code of"):
        references.record(tmp_path / "run" / "chapter.ipynb", stored=tmp_path / "chapter.ipynb")
