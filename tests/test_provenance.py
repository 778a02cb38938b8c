"""The commit a result records: '+dirty' for changed code, not for results written beside it."""
import subprocess

from cpbook.provenance import RESULTS_PATH, git_commit


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_dirty_means_changed_code_not_new_results(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    results = tmp_path / RESULTS_PATH
    results.mkdir(parents=True)
    (results / "model.csv").write_text("a\n1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (results / "model.csv").write_text("a\n2\n")          # a rerun rewrote a stored result
    (results / "other.csv").write_text("a\n3\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")          # the code changed
    assert git_commit(tmp_path) == clean + "+dirty"


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_the_cpu_numerics_are_recorded_and_compared():
    """Stored results carry the CPU numerics they were computed with (a model trained on another
    kind of CPU differs in its last bits), and a recomputation that disagrees can say why."""
    from cpbook.provenance import numerics, numerics_note, provenance

    now = numerics()
    assert provenance()["numerics"] == now
    assert now["cpu_vendor"] and now["aten_capability"] and now["torch_threads"] >= 1
    assert numerics_note(now) == "same CPU numerics as the stored run"
    assert "records no CPU numerics" in numerics_note(None)
    other = {**now, "cpu_vendor": "SomeOtherVendor", "torch_threads": now["torch_threads"] + 1}
    message = numerics_note(other)
    assert "cpu_vendor 'SomeOtherVendor' there" in message and "torch_threads" in message
    assert "aten_capability" not in message
