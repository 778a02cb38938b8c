"""Chapter 8, language-model part: where instruction tuning's suppression of in-context learning
goes when the tuning data is in more languages, how it grows with the dose, and whether the
prompts that look most like the tuning data lose the most.

All three read the stored ICL-vs-instruction rows of chapter 5's runs (`cpbook score icl`)
and compare models on the same prompts (`analysis.paired_rows`: a run with fewer prompts per task
pair holds the first draws of a longer one). Conventions are chapter 5's: ICL accuracy with a
Wilson interval; changes paired by prompt; the margin m = log p(ICL answer) - log p(instruction
answer) and its shift base - tuned (positive: toward following the instruction).

Looking like the tuning data is measured without a model: the cosine similarity of character
trigram TF-IDF vectors (idf from the tuning examples) between a prompt's query block (its last
"Input: ... / Output:" block, the part that carries an instruction) and its nearest tuning
example. It is the language-model stand-in for the synthetic chapters' g: a prompt near the
tuning data should be read as the tuning task.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from cpbook import stats
from cpbook.llm import analysis, experiment, instruct_data, runner, tune_config
from cpbook.llm.registry import check_model
from cpbook.llm.tasks import TASKS
from cpbook.verdicts import interval_texts

LEVEL = stats.LEVEL_FIGURES


# --- loading ----------------------------------------------------------------------------------

def load(names) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Stored rows (with their prompts and answers) and provenance of each model, each checked
    (checksum, columns, row count); a missing set names the command that makes it."""
    results, records = {}, {}
    for name in dict.fromkeys(names):
        rows, record = runner.load(TASKS["icl"], name)
        results[name] = experiment.with_answers(rows, record)
        records[name] = record
    return results, records


# --- tuning in more languages --------------------------------------------------------------------

def shifts(base: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """Per conflict prompt: the accuracy drop (0/1 difference) and margin shift, base to tuned."""
    return analysis.paired_rows(base, tuned)[["surface", "task_pair", "index", "drop", "margin_shift"]]


def compare_tunings(base: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, surfaces,
                    level: float = LEVEL) -> pd.DataFrame:
    """Per surface: drop and margin shift from the base under tuning a and under tuning b, and
    b minus a, paired by prompt (on the prompts all three share). Drops in points."""
    pa, pb = shifts(base, a), shifts(base, b)
    both = pa.merge(pb, on=["surface", "task_pair", "index"], suffixes=("_a", "_b"), validate="one_to_one")
    rows = []
    for s in surfaces:
        g = both[both["surface"] == s]
        row = {"surface": s, "n": len(g)}
        for col, scale in (("drop", 100), ("margin_shift", 1)):
            for who in ("a", "b"):
                iv = stats.mean_interval(scale * g[f"{col}_{who}"], level)
                row.update({f"{col}_{who}": iv.mean, f"{col}_{who}_low": iv.low, f"{col}_{who}_high": iv.high})
            iv = stats.mean_interval(scale * (g[f"{col}_b"] - g[f"{col}_a"]), level)
            row.update({f"{col}_diff": iv.mean, f"{col}_diff_low": iv.low, f"{col}_diff_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)


def inside_minus_outside(base: pd.DataFrame, tuned: pd.DataFrame, inside, outside, column: str = "margin_shift"
                         ) -> pd.Series:
    """Per question (task pair, index): the mean `column` over the surfaces in `inside` minus the
    mean over `outside`. Positive: the tuning moved the inside surfaces more."""
    wide = stats.pivot_unique(shifts(base, tuned), index=["task_pair", "index"], columns="surface", values=column)
    return wide[list(inside)].mean(axis=1) - wide[list(outside)].mean(axis=1)


def spread_test(base: pd.DataFrame, english: pd.DataFrame, multilingual: pd.DataFrame, spread_to, outside,
                column: str = "margin_shift", level: float = LEVEL) -> dict[str, stats.Interval]:
    """The prediction in one number per tuning: the shift of the languages the multilingual data
    added (`spread_to`) minus that of the surfaces outside every tuning set, per question; and
    the multilingual value minus the English-only one (a difference in differences, paired by
    question). Positive difference: adding the languages moved the suppression toward them."""
    e = inside_minus_outside(base, english, spread_to, outside, column)
    m = inside_minus_outside(base, multilingual, spread_to, outside, column)
    common = e.index.intersection(m.index)
    e, m = e.loc[common], m.loc[common]
    scale = 100 if column == "drop" else 1
    return {"English-only": stats.mean_interval(scale * e, level),
            "multilingual": stats.mean_interval(scale * m, level),
            "multilingual minus English-only": stats.mean_interval(scale * (m - e), level)}


# --- the dose ------------------------------------------------------------------------------------

def dose_table(results: dict[str, pd.DataFrame], base: str, doses, surfaces, level: float = LEVEL) -> pd.DataFrame:
    """Per tuned model (a dose) and surface: conflict and control ICL accuracy (Wilson), the
    paired drop of each from the base (points), and the margin shift (nats), with intervals.
    The learning rate of each model is read from its registered recipe."""
    rows = []
    for name in doses:
        lr = check_model(name).source.config().lr
        conflict = analysis.paired_rows(results[base], results[name])
        control = analysis.paired_rows(results[base], results[name], control=True)
        for s in surfaces:
            c, k = conflict[conflict["surface"] == s], control[control["surface"] == s]
            row = {"model": name, "lr": lr, "surface": s}
            for label, part in (("conflict", c), ("control", k)):
                acc = stats.wilson_interval(int(part["tuned"].sum()), len(part), level)
                drop = stats.mean_interval(100 * part["drop"], level)
                row.update({f"{label}_%": 100 * acc.mean, f"{label}_low": 100 * acc.low,
                            f"{label}_high": 100 * acc.high, f"{label}_base_%": 100 * part["base"].mean(),
                            f"{label}_drop": drop.mean, f"{label}_drop_low": drop.low,
                            f"{label}_drop_high": drop.high})
            shift = stats.mean_interval(c["margin_shift"], level)
            row.update({"margin_shift": shift.mean, "shift_low": shift.low, "shift_high": shift.high})
            rows.append(row)
    return pd.DataFrame(rows)


def pooled_control_drop(results: dict[str, pd.DataFrame], base: str, name: str, surfaces=None,
                        level: float = LEVEL) -> stats.Interval:
    """The control-accuracy drop (points) from the base, pooled over surfaces (all by default):
    above zero, tuning has overwritten the skill itself, not just its inference."""
    control = analysis.paired_rows(results[base], results[name], control=True)
    if surfaces is not None:
        control = control[control["surface"].isin(list(surfaces))]
    return stats.mean_interval(100 * control["drop"], level)


# --- looking like the tuning data -----------------------------------------------------------------

def trigrams(text: str) -> Counter:
    t = f" {text.lower()} "
    return Counter(t[i:i + 3] for i in range(len(t) - 2))


class TrigramIndex:
    """TF-IDF vectors of character trigrams, the idf taken from the documents indexed; `nearest`
    gives each query's largest cosine similarity to any indexed document."""

    def __init__(self, documents: list[str]):
        counts = [trigrams(d) for d in documents]
        self.vocab = {g: i for i, g in enumerate(sorted(set().union(*counts)))}
        df = np.zeros(len(self.vocab))
        for c in counts:
            df[[self.vocab[g] for g in c]] += 1
        self.idf = np.log((1 + len(documents)) / (1 + df)) + 1   # smoothed: a trigram in every document keeps weight 1
        self.matrix = self._vectors(counts)

    def _vectors(self, counts: list[Counter]) -> sparse.csr_matrix:
        rows, cols, vals = [], [], []
        for r, c in enumerate(counts):
            for g, n in c.items():
                j = self.vocab.get(g)
                if j is not None:      # a trigram never seen in the tuning data carries no similarity
                    rows.append(r)
                    cols.append(j)
                    vals.append(n * self.idf[j])
        m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(counts), len(self.vocab)))
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1))).ravel()
        return sparse.diags(1 / np.maximum(norms, 1e-12)) @ m

    def nearest(self, texts: list[str]) -> np.ndarray:
        sims = self._vectors([trigrams(t) for t in texts]) @ self.matrix.T
        return np.asarray(sims.max(axis=1).todense()).ravel()


def tuning_texts(name: str, task: str = "icl") -> list[str]:
    """The instructions a model tuned here saw (prompt and answer of every example of its run):
    as its stored tuning record beside `task`'s results states them (recipe and data version),
    so a stored model is read against its own data after the generator moved on; a model with
    no stored record, as the registry tunes it now."""
    record = runner.tuning_record(task, name)
    if record is None:
        cfg, version = asdict(check_model(name).source.config()), instruct_data.DATA_VERSION
    else:
        cfg, version = record["config"], record["data_version"]
        version = version["instruct_data_version"] if isinstance(version, dict) else version
    data = cfg.get("data", "instructions")   # a record older than the field: tuned on the default
    stream = tune_config.DATA[data]
    if not isinstance(stream, instruct_data.Multilingual) and stream is not instruct_data:
        raise ValueError(f"{name} was tuned on {data!r}, not on instructions: no similarity to read")
    examples = stream.examples(cfg["data_seed"], 0, cfg["steps"] * cfg["batch_size"], version=version)
    return [e["prompt"] + e["answer"] for e in examples]


def query_block(prompt: str) -> str:
    """The last block of an ICL prompt: the query and its labels."""
    return prompt.rsplit("\n\n", 1)[-1]


def similarity_rows(base: pd.DataFrame, tuned: pd.DataFrame, tuned_name: str) -> pd.DataFrame:
    """Conflict prompts with their margin shift and their query's similarity to the nearest
    example of `tuned_name`'s tuning data."""
    rows = analysis.paired_rows(base, tuned)
    queries = base[~base["control"]].set_index(["surface", "task_pair", "index"])["prompt"]
    texts = [query_block(queries.loc[key]) for key in zip(rows["surface"], rows["task_pair"], rows["index"])]
    rows["similarity"] = TrigramIndex(tuning_texts(tuned_name)).nearest(texts)
    return rows


def rank_correlation(rows: pd.DataFrame, x: str = "similarity", y: str = "margin_shift",
                     within: str | None = None, level: float = stats.LEVEL_ASSERTS, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Per surface: the rank correlation of x and y (Spearman's), with a bootstrap interval over
    questions. With within="task_pair" both are ranked inside each task pair, so only the
    variation among prompts of the same kind counts (a kind that is both more similar and more
    shifted no longer makes the correlation). Positive: the prompts most like the tuning data
    lost the most."""
    out = []
    for s, part in rows.groupby("surface", sort=False):
        groups = part.groupby(within) if within else part.groupby(lambda _: 0)
        rx = groups[x].transform(lambda v: rankdata(v) / len(v)).to_numpy()
        ry = groups[y].transform(lambda v: rankdata(v) / len(v)).to_numpy()

        def corr(idx):
            return float(np.corrcoef(rx[idx], ry[idx])[0, 1])

        iv = stats.bootstrap_interval(corr, len(part), level, n_boot, seed)
        out.append({"surface": s, "n": len(part), "correlation": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(out)


def correlations(similar: dict[str, pd.DataFrame], level: float = stats.LEVEL_ASSERTS) -> pd.DataFrame:
    """`rank_correlation` of every model's `similarity_rows`, over whole surfaces and within task
    pairs: columns model, scope, surface, n, correlation, low, high."""
    frames = []
    for name, rows in similar.items():
        for scope, within in (("whole surface", None), ("within task pair", "task_pair")):
            frames.append(rank_correlation(rows, within=within, level=level).assign(model=name, scope=scope))
    return pd.concat(frames, ignore_index=True)


def formatted(table: pd.DataFrame, value: str, index: str, columns, digits: int = 2) -> pd.DataFrame:
    """A table of "value [low, high]" strings, `index` as rows and `columns` as columns."""
    text = table.assign(_text=interval_texts(table[value], table["low"], table["high"], digits))
    return stats.pivot_unique(text, index=index, columns=columns, values="_text").reindex(
        list(dict.fromkeys(table[index])))


def overwriting_table(results: dict[str, pd.DataFrame], base: str, lm_doses, dose: pd.DataFrame,
                      reference: str = "en", level: float = stats.LEVEL_ASSERTS) -> pd.DataFrame:
    """Per dose, in order of learning rate: the control-accuracy drop pooled over surfaces (with
    its interval: above zero is overwriting) beside the reference language's conflict drop and
    margin shift (suppression)."""
    rows = {}
    for name in lm_doses:
        ref = dose[(dose["model"] == name) & (dose["surface"] == reference)].iloc[0]
        iv = pooled_control_drop(results, base, name, level=level)
        rows[name] = {"lr": f"{ref['lr']:g}", "control drop, all surfaces": iv.mean, "low": iv.low, "high": iv.high,
                      f"conflict drop, {reference}": ref["conflict_drop"],
                      f"margin shift, {reference}": ref["margin_shift"]}
    return pd.DataFrame.from_dict(rows, orient="index").sort_values("lr", key=lambda lr: lr.astype(float))


def reference_gap_by_dose(results: dict[str, pd.DataFrame], base: str, doses, surfaces, reference: str = "en",
                          column: str = "margin_shift", level: float = stats.LEVEL_ASSERTS) -> pd.DataFrame:
    """Per dose and surface: the reference's shift minus the surface's, paired by question
    (`analysis.gap_vs_reference`). Positive: the reference language lost more."""
    return pd.concat([analysis.gap_vs_reference(results[base], results[name], surfaces, reference, column, level)
                      .assign(model=name) for name in doses], ignore_index=True)


def overwriting_dose(table: pd.DataFrame) -> str | None:
    """The first dose (in order of learning rate) of an `overwriting_table` whose pooled control
    drop lies above zero: where suppression turns into overwriting (None: at no dose)."""
    over = table[table["low"].astype(float) > 0]
    return str(over.index[0]) if len(over) else None


def surface_means(rows: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per surface: mean similarity to the tuning data and mean margin shift (with its interval)."""
    out = []
    for s, part in rows.groupby("surface", sort=False):
        iv = stats.mean_interval(part["margin_shift"], level)
        out.append({"surface": s, "similarity": part["similarity"].mean(), "margin_shift": iv.mean,
                    "low": iv.low, "high": iv.high})
    return pd.DataFrame(out)
