"""Tables and statistics of chapter 5, from the stored ICL-vs-instruction rows.

Conventions:
- ICL accuracy is the share of conflict prompts whose greedy continuation starts with the ICL
  answer (the paper's metric), with a Wilson interval (95% unless a `level` says otherwise).
- A drop compares a base model with a tuned one on the *same* prompts: per prompt,
  d = correct(base) - correct(tuned), so the interval is a paired one (mean of d +- z se).
- The language-gap question compares drops, not accuracies: per prompt index, the English drop
  minus the drop on the same question in another surface form. The draws are shared across
  surfaces, so this too is paired.
- The margin m = log p(ICL answer) - log p(instruction answer) is the graded version: fine-tuning
  that shifts task inference toward instruction following lowers m, even where the greedy
  answer does not change.
Interval formulas and the default levels (95%; asserts ask for 99%) are those of cpbook.stats.
"""
from __future__ import annotations

import pandas as pd

from cpbook import cache
from cpbook.llm import experiment, models, prompts
from cpbook.stats import LEVEL_FIGURES, mean_interval, pivot_unique, require_unique, wilson_interval

QUESTION_KEY = ["task_pair", "index"]   # the same question in every surface form


def wilson(k: int, n: int, level: float = LEVEL_FIGURES) -> tuple[float, float]:
    """Wilson score interval (low, high) of a binomial proportion k / n (NaN when n = 0)."""
    iv = wilson_interval(k, n, level)
    return iv.low, iv.high


def pooled_accuracy(df: pd.DataFrame, control: bool, level: float = LEVEL_FIGURES
                    ) -> tuple[float, tuple[float, float]]:
    """ICL accuracy over all surfaces of one model's control (or conflict) prompts, with its
    Wilson interval: (accuracy, (low, high))."""
    part = df[df["control"] == control]["icl_correct"]
    return float(part.mean()), wilson(int(part.sum()), len(part), level)


def accuracy_table(results: dict[str, pd.DataFrame], control: bool = False,
                   level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """ICL accuracy per model and surface form (conflict prompts, or control prompts)."""
    rows = []
    for model, df in results.items():
        part = df[df["control"] == control]
        for surface, g in part.groupby("surface", sort=False):
            k, n = int(g["icl_correct"].sum()), len(g)
            lo, hi = wilson(k, n, level)
            rows.append({"model": model, "surface": surface, "n": n, "icl_accuracy": k / n,
                         "low": lo, "high": hi, "if_rate": float(g["if_correct"].mean()),
                         "mean_margin": float(g["margin"].mean()) if not control else float("nan")})
    return pd.DataFrame(rows)


def paired_rows(base: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """Conflict rows of both models side by side, matched by (surface, task pair, index).

    A run with fewer prompts per pair holds the first draws of a longer one (the draws are
    sequential), so two runs are compared on the smaller run's prompts; any other mismatch, or a
    prompt stored twice, is an error."""
    cols = ["surface"] + QUESTION_KEY
    b, t = base[~base["control"]], tuned[~tuned["control"]]
    require_unique(b, cols)
    require_unique(t, cols)
    b, t = b.set_index(cols), t.set_index(cols)
    common = b.index.intersection(t.index)
    if len(common) != min(len(b), len(t)):
        raise ValueError("base and tuned results were not scored on the same prompts")
    b, t = b.loc[common], t.loc[common]
    out = pd.DataFrame({"base": b["icl_correct"].astype(int), "tuned": t["icl_correct"].astype(int),
                        "margin_base": b["margin"], "margin_tuned": t["margin"]})
    out["drop"] = out["base"] - out["tuned"]
    out["margin_shift"] = out["margin_base"] - out["margin_tuned"]
    return out.reset_index()


def drop_table(base: pd.DataFrame, tuned: pd.DataFrame, surfaces,
               level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """The paper's layout: base %, tuned %, drop in points with its paired interval, plus the
    mean margin shift (base minus tuned, in nats) with its interval."""
    pairs = paired_rows(base, tuned)
    rows = []
    for s in surfaces:
        g = pairs[pairs["surface"] == s]
        drop = mean_interval(g["drop"], level)
        shift = mean_interval(g["margin_shift"], level)
        rows.append({"surface": s, "n": len(g), "base_%": 100 * g["base"].mean(),
                     "tuned_%": 100 * g["tuned"].mean(), "drop": 100 * drop.mean,
                     "drop_low": 100 * drop.low, "drop_high": 100 * drop.high,
                     "margin_shift": shift.mean, "shift_low": shift.low, "shift_high": shift.high})
    return pd.DataFrame(rows)


def gap_vs_reference(base: pd.DataFrame, tuned: pd.DataFrame, surfaces, reference: str = "en",
                     column: str = "drop", level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per surface s: mean over questions of (column at `reference` - column at s), paired by
    question (task pair, index). column is "drop" (points of accuracy) or "margin_shift"."""
    pairs = paired_rows(base, tuned)
    wide = pivot_unique(pairs, index=QUESTION_KEY, columns="surface", values=column)
    scale = 100 if column == "drop" else 1
    rows = []
    for s in surfaces:
        if s == reference:
            continue
        iv = mean_interval(wide[reference] - wide[s], level)
        rows.append({"surface": s, "difference": scale * iv.mean, "low": scale * iv.low,
                     "high": scale * iv.high})
    return pd.DataFrame(rows)


def scorer_agreement(df: pd.DataFrame) -> dict:
    """How often the two scorers name the same task on conflict prompts: greedy says ICL when its
    continuation starts with the ICL answer, the margin says ICL when m > 0. `decisive` restricts
    to prompts where greedy produced one of the two answers."""
    c = df[~df["control"]]
    by_margin = c["margin"] > 0
    agree = c["icl_correct"] == by_margin
    decisive = c["icl_correct"] | c["if_correct"]
    return {"n": len(c), "agreement": float(agree.mean()),
            "n_decisive": int(decisive.sum()),
            "agreement_decisive": float(agree[decisive].mean()) if decisive.any() else float("nan")}


def format_table(drops: pd.DataFrame) -> pd.DataFrame:
    """The drop table as the chapter prints it: percentages and intervals as text."""
    return pd.DataFrame({
        "surface": drops["surface"],
        "base %": drops["base_%"].map("{:.1f}".format),
        "tuned %": drops["tuned_%"].map("{:.1f}".format),
        "drop (95% CI)": [f"{d:.1f} [{lo:.1f}, {hi:.1f}]" for d, lo, hi in
                          zip(drops["drop"], drops["drop_low"], drops["drop_high"])],
        "margin shift, nats (95% CI)": [f"{d:.2f} [{lo:.2f}, {hi:.2f}]" for d, lo, hi in
                                        zip(drops["margin_shift"], drops["shift_low"], drops["shift_high"])],
    }).set_index("surface")


def check_chapter(base: str, tuned: str, cross_family, reference: str = "en") -> list[str]:
    """Chapter 5's parameters checked against the registry and the surface forms (no file is
    read); returns the models it names. `cpbook run` calls it before a kernel starts."""
    names = [base, tuned, *cross_family]
    for name in names:
        models.check_model(name)
    if len(set(names)) != len(names):
        raise ValueError(f"each model may appear once: {names}")
    prompts.check_surface(reference)
    return names


def load_chapter(base: str, tuned: str, cross_family, reference: str = "en"):
    """Check chapter 5's parameters and load the stored rows and provenance of every model it
    names, failing with a clear message (unknown model or surface, results not computed yet)
    before any work. Returns ({model: rows}, {model: provenance record})."""
    names = check_chapter(base, tuned, cross_family, reference)
    loaded = {name: experiment.load_results(name) for name in names}
    results = {name: rows for name, (rows, _) in loaded.items()}
    records = {name: record for name, (_, record) in loaded.items()}
    if reference not in set(results[base]["surface"]):
        raise ValueError(f"reference {reference!r} was not scored; stored surfaces: "
                         f"{', '.join(results[base]['surface'].unique())}")
    return results, records


def provenance_table(records: dict[str, dict]) -> pd.DataFrame:
    """Where each model's stored rows came from, one line per model."""
    rows = []
    for name, r in records.items():
        digest = r["checksum"].get("gguf_sha256") or next(iter(r["checksum"].get("weights_sha256", {}).values()), "")
        rows.append({"model": name, "kind": r["model_kind"], "rows": r["rows"],
                     "prompts per pair": r["run"]["n_per_pair"], "control per pair": r["run"]["n_control"],
                     "BOS": r["run"]["bos"], "weights SHA-256": digest[:12],
                     "commit": r["commit"][:7] + ("+dirty" if r["commit"].endswith("+dirty") else ""),
                     "torch": r["versions"]["torch"], "transformers": r["versions"]["transformers"]})
    return pd.DataFrame(rows).set_index("model")


def show_example(results, records, names, surface: str, task_pair: str, index: int) -> None:
    """Print one prompt as the models saw it, its two answers, and each model's continuation."""
    run = records[names[0]]["run"]
    table = prompts.build_prompts([surface], n_per_pair=index + 1, seed=run["seed"], task_pairs=[task_pair])
    row = table.iloc[index]
    print(row["prompt"])
    print(f"\n  ICL answer {row['icl_answer']!r}, instruction-following answer {row['if_answer']!r}")
    for name in names:
        df = results[name]
        hit = df[(df["surface"] == surface) & (df["task_pair"] == task_pair) & (df["index"] == index)
                 & ~df["control"]].iloc[0]
        verdict = "ICL" if hit["icl_correct"] else "instruction" if hit["if_correct"] else "neither"
        print(f"  {name:>24}: {hit['continuation']!r}  ({verdict}; margin {hit['margin']:+.2f} nats)")


def format_gap(drop_gap: pd.DataFrame, margin_gap: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The language-gap table: how much larger the reference's drop is than each surface's."""
    return pd.DataFrame({
        "surface": drop_gap["surface"],
        f"{reference} drop minus this drop, points (95% CI)": [
            f"{d:.1f} [{lo:.1f}, {hi:.1f}]" for d, lo, hi in zip(drop_gap["difference"], drop_gap["low"], drop_gap["high"])],
        f"{reference} margin shift minus this one, nats (95% CI)": [
            f"{d:.2f} [{lo:.2f}, {hi:.2f}]" for d, lo, hi in zip(margin_gap["difference"], margin_gap["low"], margin_gap["high"])],
    }).set_index("surface")


def tuning_record(name: str):
    """The stored tuning provenance of a model tuned here (recipe, loss history), else None."""
    path = experiment.RESULTS / f"{name}.tuning.json"
    return cache.read_json(path) if path.exists() else None
