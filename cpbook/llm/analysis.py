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

from cpbook.llm import experiment, runner
from cpbook.llm.score import prefix_match
from cpbook.llm.tasks import PAPER_DEMOS, TASKS, check_icl_chapter
from cpbook.verdicts import interval_texts
from cpbook.stats import (LEVEL_FIGURES, crossed_interval, mean_interval, pivot_unique, require_unique,
                          wilson_interval)

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
                         "mean_margin": float(g["margin"].mean()) if not control else float("nan"),
                         "mean_margin_per_token": (float(g["margin_per_token"].mean()) if not control
                                                   else float("nan"))})
    return pd.DataFrame(rows)


def paired_rows(base: pd.DataFrame, tuned: pd.DataFrame, control: bool = False) -> pd.DataFrame:
    """Conflict rows (or control rows) of both models side by side, matched by (surface, task
    pair, index); control rows have no margin (NaN).

    A run with fewer prompts per pair holds the first draws of a longer one (the draws are
    sequential), so two runs are compared on the smaller run's prompts; any other mismatch, or a
    prompt stored twice, is an error."""
    cols = ["surface"] + QUESTION_KEY
    b, t = base[base["control"] == control], tuned[tuned["control"] == control]
    require_unique(b, cols)
    require_unique(t, cols)
    b, t = b.set_index(cols), t.set_index(cols)
    common = b.index.intersection(t.index)
    if len(common) != min(len(b), len(t)):
        raise ValueError("base and tuned results were not scored on the same prompts")
    b, t = b.loc[common], t.loc[common]
    out = pd.DataFrame({"base": b["icl_correct"].astype(int), "tuned": t["icl_correct"].astype(int),
                        "margin_base": b["margin"], "margin_tuned": t["margin"],
                        "pt_base": b["margin_per_token"], "pt_tuned": t["margin_per_token"]})
    out["drop"] = out["base"] - out["tuned"]
    out["margin_shift"] = out["margin_base"] - out["margin_tuned"]
    out["pt_shift"] = out["pt_base"] - out["pt_tuned"]
    return out.reset_index()


def drop_table(base: pd.DataFrame, tuned: pd.DataFrame, surfaces,
               level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """The paper's layout: base %, tuned %, drop in points with its paired interval, plus the
    mean margin shift (base minus tuned, in nats) and the mean shift of the per-token margin
    (nats per answer token), each with its interval."""
    pairs = paired_rows(base, tuned)
    rows = []
    for s in surfaces:
        g = pairs[pairs["surface"] == s]
        drop = mean_interval(g["drop"], level)
        shift = mean_interval(g["margin_shift"], level)
        pt = mean_interval(g["pt_shift"], level)
        rows.append({"surface": s, "n": len(g), "base_%": 100 * g["base"].mean(),
                     "tuned_%": 100 * g["tuned"].mean(), "drop": 100 * drop.mean,
                     "drop_low": 100 * drop.low, "drop_high": 100 * drop.high,
                     "margin_shift": shift.mean, "shift_low": shift.low, "shift_high": shift.high,
                     "pt_shift": pt.mean, "pt_low": pt.low, "pt_high": pt.high})
    return pd.DataFrame(rows)


def gap_vs_reference(base: pd.DataFrame, tuned: pd.DataFrame, surfaces, reference: str = "en",
                     column: str = "drop", level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per surface s: mean over questions of (column at `reference` - column at s), paired by
    question (task pair, index). column is "drop" (points of accuracy), "margin_shift" (nats)
    or "pt_shift" (nats per answer token)."""
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


# --- the one-pass verdict against the paper's prefix match ---------------------------------------

DISAGREEMENTS = {
    "runs on": "greedy text starts with the answer and runs on in the same word (' ___' for ' __')",
    "no space": "greedy text starts with the answer's word but without the space before it",
    "other split": "greedy text starts with the answer, cut into other tokens",
    "near tie": "one pass says greedy emits the answer's tokens, the generated text does not start with it",
}


def disagreement_kind(continuation: str, answer: str, greedy: bool) -> str | None:
    """Why the one-pass verdict (greedy decoding emits the answer's exact tokens) and the paper's
    prefix match of the generated text differ on one prompt; None where they agree."""
    matched = prefix_match(continuation, answer)
    if matched == greedy:
        return None
    if greedy:
        return "near tie"
    word = answer.lstrip()
    after = continuation.lstrip()[len(word):len(word) + 1]
    if after and (after.isalnum() or after == "_"):
        return "runs on"
    if answer.startswith(" ") and not continuation.startswith(" "):
        return "no space"
    return "other split"


def greedy_agreement(results: dict[str, pd.DataFrame], level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per model, over every stored prompt (conflict and control): how often "greedy decoding
    would emit the ICL answer" (one pass) agrees with "the 10 generated tokens start with the ICL
    answer" (the paper's protocol), with a Wilson interval, and how many disagreements of each
    kind (`DISAGREEMENTS`)."""
    rows = []
    for name, df in results.items():
        kinds = [disagreement_kind(c, a, g) for c, a, g in
                 zip(df["continuation"], df["icl_answer"], df["greedy_icl"])]
        agree = sum(k is None for k in kinds)
        iv = wilson_interval(agree, len(df), level)
        rows.append({"model": name, "prompts": len(df), "agree": agree, "agreement": agree / len(df),
                     "low": iv.low, "high": iv.high,
                     **{kind: sum(k == kind for k in kinds) for kind in DISAGREEMENTS}})
    return pd.DataFrame(rows).set_index("model")


def disagreement_examples(results: dict[str, pd.DataFrame], per_kind: int = 2) -> pd.DataFrame:
    """A few prompts of each kind of disagreement, with the answer and the generated text."""
    rows = []
    for name, df in results.items():
        for _, r in df.iterrows():
            answer = r["icl_answer"]
            kind = disagreement_kind(r["continuation"], answer, r["greedy_icl"])
            if kind:
                rows.append({"kind": kind, "model": name, "surface": r["surface"],
                             "task pair": r["task_pair"], "ICL answer": repr(answer),
                             "generated": repr(r["continuation"][:30])})
    out = pd.DataFrame(rows, columns=["kind", "model", "surface", "task pair", "ICL answer", "generated"])
    return out.groupby("kind", sort=False).head(per_kind).reset_index(drop=True)


# --- demonstrations as evidence --------------------------------------------------------------------

def demos_table(curve: dict[int, dict[str, pd.DataFrame]], level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """ICL accuracy (Wilson interval) and mean margin (normal interval) per number of
    demonstrations, model and surface, on the conflict prompts."""
    rows = []
    for n, results in curve.items():
        for _, r in accuracy_table(results, level=level).iterrows():
            df = results[r["model"]]
            m = mean_interval(df[(df["surface"] == r["surface"]) & ~df["control"]]["margin"], level)
            rows.append({"n_demos": n, **r.to_dict(), "margin_low": m.low, "margin_high": m.high})
    return pd.DataFrame(rows)


def demos_drops(curve: dict[int, dict[str, pd.DataFrame]], base: str, tuned: str, surfaces,
                reference: str = "en", level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per number of demonstrations and surface: the drop (points) and margin shift (nats) from
    base to tuned, and how much larger the reference's drop is than this surface's (paired by
    question; NaN on the reference itself)."""
    out = []
    for n, results in curve.items():
        drops = drop_table(results[base], results[tuned], surfaces, level)
        gap = gap_vs_reference(results[base], results[tuned], surfaces, reference, level=level)
        gap_m = gap_vs_reference(results[base], results[tuned], surfaces, reference, "margin_shift", level)
        drops = drops.merge(gap.add_prefix("gap_").rename(columns={"gap_surface": "surface"}), on="surface", how="left")
        drops = drops.merge(gap_m.add_prefix("mgap_").rename(columns={"mgap_surface": "surface"}), on="surface", how="left")
        out.append(drops.assign(n_demos=n))
    return pd.concat(out, ignore_index=True)


def format_table(drops: pd.DataFrame) -> pd.DataFrame:
    """The drop table as the chapter prints it: percentages and intervals as text."""
    return pd.DataFrame({
        "surface": drops["surface"],
        "base %": drops["base_%"].map("{:.1f}".format),
        "tuned %": drops["tuned_%"].map("{:.1f}".format),
        "drop (95% CI)": interval_texts(drops["drop"], drops["drop_low"], drops["drop_high"], 1),
        "margin shift, nats (95% CI)": interval_texts(drops["margin_shift"], drops["shift_low"], drops["shift_high"]),
        "per token (95% CI)": interval_texts(drops["pt_shift"], drops["pt_low"], drops["pt_high"]),
    }).set_index("surface")


def load_chapter(base: str, tuned: str, cross_family, reference: str = "en",
                 n_demos: int = PAPER_DEMOS, demo_counts=(PAPER_DEMOS,)):
    """Check chapter 5's parameters and load the stored rows and provenance of every prompt set
    it names, failing with a clear message (unknown model or surface, a prompt set not computed
    yet) before any work. Returns (results, curve, records): results {model: rows} with
    `n_demos` demonstrations; curve {number of demonstrations: {base: rows, tuned: rows}};
    records {file stem: provenance record} for every set read."""
    names = check_icl_chapter(base, tuned, cross_family, reference, n_demos, demo_counts)
    records, loaded = {}, {}
    for name, n in dict.fromkeys([(name, n_demos) for name in names]
                                 + [(name, n) for n in demo_counts for name in (base, tuned)]):
        rows, record = runner.load(TASKS["icl"], name, n)
        loaded[name, n] = experiment.with_answers(rows, record)
        records[TASKS["icl"].stem(name, n)] = record
    results = {name: loaded[name, n_demos] for name in names}
    curve = {n: {name: loaded[name, n] for name in (base, tuned)} for n in sorted(set(demo_counts))}
    if reference not in set(results[base]["surface"]):
        raise ValueError(f"reference {reference!r} was not scored; stored surfaces: "
                         f"{', '.join(results[base]['surface'].unique())}")
    return results, curve, records


def show_example(results, names, surface: str, task_pair: str, index: int) -> None:
    """Print one prompt as the models saw it, its two answers, and each model's continuation."""
    def row_of(df):
        return df[(df["surface"] == surface) & (df["task_pair"] == task_pair) & (df["index"] == index)
                  & ~df["control"]].iloc[0]
    first = row_of(results[names[0]])
    print(first["prompt"])
    print(f"\n  ICL answer {first['icl_answer']!r}, instruction-following answer {first['if_answer']!r}")
    for name in names:
        hit = row_of(results[name])
        verdict = "ICL" if hit["icl_correct"] else "instruction" if hit["if_correct"] else "neither"
        print(f"  {name:>24}: {hit['continuation']!r}  ({verdict}; margin {hit['margin']:+.2f} nats)")


def format_gap(drop_gap: pd.DataFrame, margin_gap: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The language-gap table: how much larger the reference's drop is than each surface's."""
    return pd.DataFrame({
        "surface": drop_gap["surface"],
        f"{reference} drop minus this drop, points (95% CI)": interval_texts(
            drop_gap["difference"], drop_gap["low"], drop_gap["high"], 1),
        f"{reference} margin shift minus this one, nats (95% CI)": interval_texts(
            margin_gap["difference"], margin_gap["low"], margin_gap["high"]),
    }).set_index("surface")


# --- over tuning seeds ---------------------------------------------------------------------------
# One tuned model is one sample of what tuning does: its adapters' initialisation and its data
# order are random. With several tuned runs of one recipe, every statistic below is a runs x
# prompts table (each run scored on the same prompts, paired with the one base model) and its
# interval is `stats.crossed_interval`, which counts the run-to-run spread and the prompts'.

SEED_COLUMNS = {"drop": 100, "margin_shift": 1, "pt_shift": 1, "lost": 100}   # scale: points or nats


def runs_table(runs_pairs: list[pd.DataFrame], surface: str, column: str,
               solved_only: bool = False) -> pd.DataFrame:
    """Rows: tuned runs (each run's `paired_rows` with the base); columns: the surface's
    questions (task pair, index); cells: `column` ("drop", "margin_shift", "pt_shift"), or
    "lost" = 1 - tuned correct. With solved_only, only the questions the base answers by ICL
    (the drop among base-solved prompts: what tuning took away of what was there)."""
    if column not in SEED_COLUMNS:
        raise ValueError(f"unknown statistic {column!r}; available: {', '.join(SEED_COLUMNS)}")
    rows = []
    for run, pairs in enumerate(runs_pairs):
        g = pairs[pairs["surface"] == surface]
        if solved_only:
            g = g[g["base"] == 1]
        values = 1 - g["tuned"] if column == "lost" else g[column]
        rows.append(pd.Series(values.to_numpy(), index=pd.MultiIndex.from_frame(g[QUESTION_KEY]), name=run))
    table = pd.DataFrame(rows)
    if table.isna().any().any():
        raise ValueError(f"{surface}: the tuned runs were not scored on the same prompts")
    return table


def seed_drop_table(base: pd.DataFrame, tuned_runs: list[pd.DataFrame], surfaces,
                    level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per surface, over the tuned runs and the prompts: the drop (points), the share of
    base-solved prompts lost (points), the margin shift in total and per answer token (nats),
    each as mean, low, high (`stats.crossed_interval`), with the number of runs and prompts."""
    runs_pairs = [paired_rows(base, tuned) for tuned in tuned_runs]
    out = []
    for s in surfaces:
        row = {"surface": s, "runs": len(tuned_runs)}
        for column, scale in SEED_COLUMNS.items():
            table = runs_table(runs_pairs, s, column, solved_only=column == "lost")
            iv = crossed_interval(table.to_numpy(), level)
            row.update({column: scale * iv.mean, f"{column}_low": scale * iv.low,
                        f"{column}_high": scale * iv.high, f"{column}_n": table.shape[1]})
        out.append(row)
    return pd.DataFrame(out)


def seed_gap(base: pd.DataFrame, tuned_runs: list[pd.DataFrame], surfaces, reference: str = "en",
             column: str = "drop", level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per surface s: the reference's statistic minus s's on the same question, over runs and
    questions (paired by run and question). column is "drop", "margin_shift" or "pt_shift"."""
    if column == "lost":
        raise ValueError("the base-solved prompts differ between surfaces: compare 'lost' per surface")
    runs_pairs = [paired_rows(base, tuned) for tuned in tuned_runs]
    ref = runs_table(runs_pairs, reference, column)
    rows = []
    for s in surfaces:
        if s == reference:
            continue
        other = runs_table(runs_pairs, s, column)
        common = ref.columns.intersection(other.columns)
        iv = crossed_interval((ref[common] - other[common]).to_numpy(), level)
        scale = SEED_COLUMNS[column]
        rows.append({"surface": s, "difference": scale * iv.mean, "low": scale * iv.low,
                     "high": scale * iv.high, "runs": len(tuned_runs), "questions": len(common)})
    return pd.DataFrame(rows)


def ranking(drops: pd.DataFrame, column: str) -> list[str]:
    """The surfaces of a `seed_drop_table` from the largest `column` to the smallest."""
    return drops.sort_values(column, ascending=False, kind="stable")["surface"].tolist()
