"""Scored rows of a language-model run, stored under book/results/<folder>/ with provenance.

Chapters 6 and 7 store their runs the way chapter 5 does (`cpbook.llm.experiment`): one
`<stem>.csv` of rows and one `<stem>.json` record (the run's parameters, the model and its
checksum, package versions, the commit the code came from), both written atomically with their
SHA-256 in the folder's manifest, and, for a model tuned here, its tuning record beside them.
Reading checks the checksum, the columns and the row count, and names the file on any mismatch.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cpbook import results
from cpbook.llm import experiment, models

RESULTS = experiment.RESULTS.parent   # book/results


def files(folder: Path, stem: str) -> tuple[Path, Path]:
    """(rows .csv, record .json), built by appending the suffix (stems hold dots: "qwen2.5-...")."""
    return Path(folder) / f"{stem}.csv", Path(folder) / f"{stem}.json"


def store(folder: Path, stem: str, model: str, table: pd.DataFrame, run: dict, origin: dict,
          seconds: float) -> None:
    """Write the rows and their record; `origin` is the provenance taken before the work began."""
    record = {"run": run, "rows": len(table), "model": model,
              "model_kind": models.check_model(model).kind,
              "checksum": experiment.model_checksum(model),
              "scoring_seconds_last_call": round(seconds, 1), **origin}
    csv, meta = files(folder, stem)
    results.write_text(csv, table.to_csv(index=False))
    results.write_json(meta, record)
    if isinstance(models.check_model(model).source, models.TunedSource):
        experiment.save_tuning_record(model, folder)


def read_rows(path: Path) -> pd.DataFrame:
    """Stored rows; a continuation may be empty or the text "NaN", so no text is read as missing
    (numeric columns still parse as numbers)."""
    df = pd.read_csv(path, keep_default_na=False)
    if "continuation" in df:
        df["continuation"] = df["continuation"].astype(str)
    return df


def load(folder: Path, stem: str, columns: list[str], command: str) -> tuple[pd.DataFrame, dict]:
    """The stored rows and record of `stem`; FileNotFoundError with `command` (the one that
    computes them) when missing, results.StoredResultError when damaged."""
    csv, meta = files(folder, stem)
    if not csv.exists() or not meta.exists():
        raise FileNotFoundError(f"no stored results {csv.name} in {Path(folder).name}/; compute them with\n"
                                f"    {command}")
    return results.read_table(csv, meta, columns, read_rows)


def tuning_record(folder: Path, model: str) -> dict | None:
    """The stored tuning record of a model tuned here (recipe, loss history), else None."""
    path = Path(folder) / f"{model}.tuning.json"
    return results.read_json(path) if path.exists() else None


def recipe_text(config: dict) -> str:
    """A LoRA tuning recipe (a tuning record's "config") in one line, as the chapters show it."""
    data = f" on {config['data']}" if config.get("data") else ""
    return (f"LoRA rank {config['rank']} (alpha {config['lora_alpha']:g}) on {config['base']}{data}: "
            f"{config['steps']} steps of {config['batch_size']} examples, lr {config['lr']:g} after "
            f"{config['warmup_steps']} warm-up steps, {config['dtype']}, data seed {config['data_seed']}, "
            f"adapter seed {config['init_seed']}")


def provenance_table(records: dict[str, dict]) -> pd.DataFrame:
    """Where each stored result came from, one line per file."""
    rows = []
    for name, r in records.items():
        digest = r["checksum"].get("gguf_sha256") or next(iter(r["checksum"].get("weights_sha256", {}).values()), "")
        rows.append({"results": name, "kind": r["model_kind"], "rows": r["rows"], "BOS": r["run"]["bos"],
                     "weights SHA-256": digest[:12], "commit": r["commit"][:7],
                     "torch": r["versions"]["torch"], "transformers": r["versions"]["transformers"]})
    return pd.DataFrame(rows).set_index("results")
