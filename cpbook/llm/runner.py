"""One pipeline for every scored language-model task: run, store, load, recompute.

A run (`cpbook score TASK MODEL`, or `run(task, r)`) scores every prompt of a task
(`cpbook.llm.tasks`) with one model and stores the rows as book/results/<folder>/<stem>.csv with
a provenance record beside it (`<stem>.json`: the run's parameters and data version, the model,
its kind and the checksum of its weights, package versions, the commit the code came from), both
written atomically with their SHA-256 in the folder's manifest; for a model tuned here its
tuning record goes beside them (`<model>.tuning.json`). Runs take tens of minutes per model on
a CPU, so the chapters never run them: they read the stored files (`load`), which are checked
against their checksum, columns and row count. Work is kept in the cache per group (a surface
form or a language) as it finishes, so an interrupted run picks up where it stopped; the
files in book/results are replaced only when the whole run has finished. `recompute` scores a
random sample of stored rows again: the tests use it to check the stored files against the code.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict

import numpy as np
import pandas as pd

from cpbook import cache, console, results
from cpbook.llm import models
from cpbook.llm.registry import ModelSpec, check_model
from cpbook.llm.tasks import PAPER_DEMOS, RESULTS, Task, check_task
from cpbook.provenance import committed_provenance


def module(task: Task):
    """The module that builds and scores a task's prompts (`rows_for`, `score_rows`, `summary`)."""
    return importlib.import_module(task.module)


def score(task: Task, spec: ModelSpec, model, tokenizer, rows: pd.DataFrame, run) -> pd.DataFrame:
    """A task's scores of `rows` (prompts from `rows_for`), with denormals flushed meanwhile."""
    with models.denormals_flushed():
        return module(task).score_rows(model, tokenizer, rows, run)


def read_rows(task: Task, path) -> pd.DataFrame:
    """Stored or cached rows. A continuation may be the text "NaN" or empty, so no text is read as
    missing; only the task's numeric columns that may be empty are."""
    df = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in task.may_be_missing})
    if "continuation" in df:
        df["continuation"] = df["continuation"].astype(str)
    return df


def run(task: Task, r, out_dir=None, progress: bool = True) -> pd.DataFrame:
    """Score every prompt of the run `r` (a `task.run_type`) and store the rows (`Task.files`);
    returns them."""
    r = r.resolved()
    spec = check_model(r.model)
    origin = committed_provenance()   # the code that scores: taken before the work, not after
    key = {**asdict(r), "weights": spec.key(), **task.extras(r)}
    # the work folder is made only once the model has loaded: a model that cannot load (a missing
    # package, not in the hub cache) leaves nothing in the cache
    work = cache.work_path(task.work_kind, key, create=False)
    groups = getattr(r, task.groups_field)
    todo = [g for g in groups if not cache.intact(work / f"{g}.csv")]   # corrupt parts: again
    t0 = time.time()
    if todo:
        model, tokenizer = models.load(spec)
        work.mkdir(parents=True, exist_ok=True)
        for group in console.progress(todo, show=progress, desc=f"scoring {r.model} on {task.name}"):
            part = score(task, spec, model, tokenizer, module(task).rows_for(r, group), r)
            cache.write_text(work / f"{group}.csv", part.to_csv(index=False), checked=True)
    table = pd.concat([read_rows(task, work / f"{g}.csv") for g in groups], ignore_index=True)
    store(task, r, spec, table, origin, time.time() - t0, out_dir)
    return table


def store(task: Task, r, spec: ModelSpec, table: pd.DataFrame, origin: dict, seconds: float,
          out_dir=None) -> None:
    """Write the rows and their record; `origin` is the provenance taken before the work began."""
    record = {"run": task.record_of(r), "rows": len(table), "model": spec.name, "model_kind": spec.kind,
              "checksum": spec.checksum(), "scoring_seconds_last_call": round(seconds, 1), **origin}
    csv, meta = task.files_of(r, out_dir)
    results.write_text(csv, table.to_csv(index=False))
    results.write_json(meta, record)
    if spec.tuned:
        save_tuning_record(spec, csv.parent)


def save_tuning_record(spec: ModelSpec, folder) -> None:
    """Copy a tuned model's record (its recipe, loss history, checksums) beside its results as
    <model>.tuning.json, so the chapter can show how tuning went without the cache."""
    entry = cache.read_entry(spec.source.folder(spec))
    record = {k: v for k, v in entry.items() if k not in ("kind", "cache_version", "config", "tune_config")}
    record.update(model=spec.name, config=entry["tune_config"], data_version=entry["config"]["data_version"],
                  checksum=spec.checksum())
    results.write_json(folder / f"{spec.name}.tuning.json", record)


def load(task: Task, model: str, n_demos: int = PAPER_DEMOS, folder=None) -> tuple[pd.DataFrame, dict]:
    """The stored rows and record of a model's run; FileNotFoundError naming what is stored and
    the command that computes the rest; results.StoredResultError (naming the file) when a file
    does not match its SHA-256, lacks a column, or holds fewer rows than its record says."""
    check_model(model)
    if not task.stored(model, n_demos, folder):
        raise task.missing(model, n_demos, folder)
    csv, meta = task.files(model, n_demos, folder)
    return results.read_table(csv, meta, list(task.columns), lambda path: read_rows(task, path))


def prompts_of(task: Task, r, rows: pd.DataFrame) -> pd.DataFrame:
    """The prompts behind stored rows (the rows store verdicts and scores, not the prompts)."""
    made = pd.concat([module(task).rows_for(r, g) for g in dict.fromkeys(rows[task.group])], ignore_index=True)
    return rows[list(task.key)].merge(made, on=list(task.key), how="left", validate="one_to_one")


def recompute(task: Task, stored: pd.DataFrame, record: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Score `n` randomly chosen stored rows again with the stored run's parameters; returns the
    stored and recomputed scores side by side (suffixes _stored and _now)."""
    r = task.run_of(record)
    spec = check_model(r.model)
    pick = stored.iloc[np.sort(rng.choice(len(stored), size=min(n, len(stored)), replace=False))]
    model, tokenizer = models.load(spec)
    now = score(task, spec, model, tokenizer, prompts_of(task, r, pick), r)
    return pick.reset_index(drop=True).merge(now, on=list(task.key), suffixes=("_stored", "_now"))


# --- what the chapters show of a stored run -----------------------------------------------------

def tuning_record(task: str, model: str) -> dict | None:
    """The stored tuning record of a model tuned here (recipe, loss history) beside its results
    for `task` (a task's name), else None."""
    path = RESULTS / check_task(task).folder / f"{model}.tuning.json"
    return results.read_json(path) if path.exists() else None


def recipe_text(config: dict) -> str:
    """A LoRA tuning recipe (a tuning record's "config") in one line, as the chapters show it."""
    data = f" on {config['data']}" if config.get("data") else ""
    return (f"LoRA rank {config['rank']} (alpha {config['lora_alpha']:g}) on {config['base']}{data}: "
            f"{config['steps']} steps of {config['batch_size']} examples, lr {config['lr']:g} after "
            f"{config['warmup_steps']} warm-up steps, {config['dtype']}, data seed {config['data_seed']}, "
            f"adapter seed {config['init_seed']}")


# the run's parameters a provenance table shows, where a run has them
_RUN_COLUMNS = {"n_demos": "demonstrations", "n_per_pair": "prompts per pair", "n_control": "control per pair"}


def provenance_table(records: dict[str, dict]) -> pd.DataFrame:
    """Where each stored result came from, one line per file."""
    rows = []
    for name, r in records.items():
        digest = r["checksum"].get("gguf_sha256") or next(iter(r["checksum"].get("weights_sha256", {}).values()), "")
        shown = {label: r["run"][field] for field, label in _RUN_COLUMNS.items() if field in r["run"]}
        rows.append({"results": name, "kind": r["model_kind"], "rows": r["rows"], **shown, "BOS": r["run"]["bos"],
                     "weights SHA-256": digest[:12],
                     "commit": r["commit"][:7] + ("+dirty" if r["commit"].endswith("+dirty") else ""),
                     "torch": r["versions"]["torch"], "transformers": r["versions"]["transformers"]})
    return pd.DataFrame(rows).set_index("results")
