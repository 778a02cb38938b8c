"""Stored results (book/results/) are checked against their recorded SHA-256 on every read: a
damaged file fails with an error naming it, before any number is computed from it."""
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cpbook import results
from cpbook.provenance import provenance
from cpbook.llm import runner
from cpbook.llm.tasks import TASKS

from conftest import make_tiny
from cpbook.llm import models

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "book" / "results"


def test_every_stored_file_is_in_its_folders_manifest_and_matches():
    folders = {p.parent for p in STORED.rglob("*") if p.is_file()}
    for folder in folders:
        listed = results.read_sums(folder)
        files = {p.name for p in folder.iterdir() if p.is_file() and p.name != results.SUMS
                 and not p.name.startswith(".")}
        assert files == set(listed), f"{folder}: files and {results.SUMS} differ"
        for name in files:
            results.check(folder / name)
    # the manifest is the standard format: sha256sum -c agrees
    for folder in folders:
        subprocess.run(["sha256sum", "--quiet", "-c", results.SUMS], cwd=folder, check=True)


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """One small stored run (a tiny random model standing in for SmolLM2)."""
    monkeypatch.setattr(models, "load", lambda spec: make_tiny())
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    icl = TASKS["icl"]
    runner.run(icl, icl.make_run("smollm2-135m-instruct", surfaces=("en",), n_per_pair=2, n_control=1,
                                 max_new_tokens=2), out_dir=out, progress=False)
    return out


def test_a_stored_run_loads(stored):
    table, record = runner.load(TASKS["icl"], "smollm2-135m-instruct", folder=stored)
    assert len(table) == record["rows"] == 10


@pytest.mark.parametrize("damage", ["truncate", "flip", "edit"])
@pytest.mark.parametrize("which", ["csv", "json"])
def test_a_damaged_stored_file_fails_naming_it(stored, damage, which):
    path = stored / f"smollm2-135m-instruct.{which}"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:40] + bytes([data[40] ^ 0x01]) + data[41:])
    else:
        path.write_bytes(data.replace(b"True", b"False", 1) if which == "csv" else data.replace(b'"rows"', b'"rows" ', 1))
    with pytest.raises(results.StoredResultError, match=f"smollm2-135m-instruct.{which}"):
        runner.load(TASKS["icl"], "smollm2-135m-instruct", folder=stored)


def test_a_missing_column_fails_naming_the_file_and_the_column(stored):
    path = stored / "smollm2-135m-instruct.csv"
    pd.read_csv(path).drop(columns="margin_per_token").to_csv(path, index=False)
    results.record(path)          # even with a matching checksum
    with pytest.raises(results.StoredResultError, match="smollm2-135m-instruct.csv.*margin_per_token"):
        runner.load(TASKS["icl"], "smollm2-135m-instruct", folder=stored)


def test_a_file_without_a_recorded_checksum_fails(stored):
    (stored / results.SUMS).write_text("")
    with pytest.raises(results.StoredResultError, match="no SHA-256 recorded"):
        runner.load(TASKS["icl"], "smollm2-135m-instruct", folder=stored)


def test_rows_missing_from_a_checksummed_file_fail(stored):
    path = stored / "smollm2-135m-instruct.csv"
    pd.read_csv(path).iloc[:-1].to_csv(path, index=False)
    results.record(path)
    with pytest.raises(results.StoredResultError, match="9 rows"):
        runner.load(TASKS["icl"], "smollm2-135m-instruct", folder=stored)


def test_a_benchmark_is_stored_with_the_machine_and_the_code_it_ran_on(tmp_path):
    from cpbook import machine
    peak = machine.matmul_peak(n=256, repeats=1)
    path = machine.save_benchmark("demo", {"speedup": 2.0, "peak_gflops": peak}, provenance(), folder=tmp_path)
    record = results.read_json(path)
    assert record["speedup"] == 2.0 and record["commit"] and "torch" in record["versions"]
    assert record["machine"]["cores"] >= 1 and record["machine"]["fp32_matmul_peak_gflops"] > 0
    assert machine.peak_rss_mib() > 10


def test_no_stored_result_comes_from_a_tree_with_uncommitted_changes():
    """Every stored record with a commit (scoring runs, benchmarks) was computed by committed code."""
    for path in STORED.rglob("*.json"):
        commit = results.read_json(path).get("commit")
        if commit is not None:
            assert commit != "unknown" and not commit.endswith("+dirty"), f"{path.name}: {commit}"


def test_a_missing_benchmark_names_what_is_stored(tmp_path):
    from cpbook import machine, performance
    machine.save_benchmark("demo", {"speedup": 2.0}, provenance(), folder=tmp_path)
    assert performance.load("demo", tmp_path)["speedup"] == 2.0
    with pytest.raises(FileNotFoundError, match="'other'.*stored: demo"):
        performance.load("other", tmp_path)
