"""Zero-shot natural-language tasks in four languages, for chapter 6 (code tuning, claim 9).

The paper measures Llama-2 and its code-tuned sibling CodeLlama on XNLI, zero-shot, with the
prompt "premise / Question: hypothesis True, False or Neither? / Answer:" and the label words
translated. XNLI is on a hub we cannot reach, so the book authors its own parallel sets
(`data/nli.json`, `data/plausibility.json`) and scores them two ways:

- **log-likelihood** (as lm-evaluation-harness scores multiple choice): the option whose
  continuation has the highest summed log-probability after the prompt is the prediction;
- **greedy decoding**: the prediction is the option whose words the greedy continuation starts
  with (none of them: wrong). This applies to NLI, whose options are label words; the
  plausibility options are whole clauses, which a free continuation does not reproduce, so that
  task is scored by log-likelihood only.

Tasks:
- `nli`: 70 premises x (entailment, neutral, contradiction), 210 items. Chance: 1/3.
- `plausibility`: 200 two-choice cause/effect items, the prompt "premise, so" (effect) or
  "premise because" (cause) in each language, continued by either alternative. Chance: 1/2.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from cpbook import cache, console
from cpbook.llm import experiment, models, paired, score, stored
from cpbook.params import ParameterError, add_options, named, param, validate
from cpbook.provenance import committed_provenance
from cpbook.stats import LEVEL_FIGURES

DATA = Path(__file__).resolve().parents[1] / "data"
RESULTS = stored.RESULTS / "zero_shot"
LANGUAGES = ("en", "fr", "es", "de")
TASKS = ("nli", "plausibility")
# The paper's NLI prompt, its words translated here. The options are the label words.
NLI_WORDS = {
    "en": {"question": "Question:", "answer": "Answer:",
           "labels": {"entailment": "True", "contradiction": "False", "neutral": "Neither"}, "or": "or"},
    "fr": {"question": "Question :", "answer": "Réponse :",
           "labels": {"entailment": "Vrai", "contradiction": "Faux", "neutral": "Aucun des deux"}, "or": "ou"},
    "es": {"question": "Pregunta:", "answer": "Respuesta:",
           "labels": {"entailment": "Verdadero", "contradiction": "Falso", "neutral": "Ninguno"}, "or": "o"},
    "de": {"question": "Frage:", "answer": "Antwort:",
           "labels": {"entailment": "Wahr", "contradiction": "Falsch", "neutral": "Weder noch"}, "or": "oder"},
}
OPTIONS = {"nli": ("entailment", "neutral", "contradiction"), "plausibility": ("choice1", "choice2")}
CHANCE = {"nli": 1 / 3, "plausibility": 1 / 2}
GREEDY_TOKENS = 5     # enough for the longest label word ("Aucun des deux")


@lru_cache(maxsize=None)
def dataset(task: str) -> dict:
    check_task(task)
    return json.loads((DATA / f"{task}.json").read_text(encoding="utf-8"))


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    return task


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; the authored sets have: {', '.join(LANGUAGES)}")
    return language


def nli_prompt(premise: str, hypothesis: str, language: str) -> str:
    w = NLI_WORDS[language]
    t, f, n = (w["labels"][k] for k in ("entailment", "contradiction", "neutral"))
    return f"{premise}\n{w['question']} {hypothesis} {t}, {f} {w['or']} {n}?\n{w['answer']}"


# German sets a comma before "weil" (English, French and Spanish need none before "because")
COMMA_BEFORE_CAUSE = {"de"}


def plausibility_prompt(premise: str, relation: str, language: str) -> str:
    """"premise, so" or "premise because": the alternatives continue it."""
    connective = dataset("plausibility")["connectives"][language][relation]
    clause = premise.rstrip().rstrip(".")
    comma = relation == "effect" or language in COMMA_BEFORE_CAUSE
    return f"{clause}, {connective}" if comma else f"{clause} {connective}"


def prompt_table(task: str, language: str) -> pd.DataFrame:
    """One row per item: id, label (the correct option's name), prompt, and one column per
    option holding its continuation (with its leading space)."""
    check_language(language)
    rows = []
    for item in dataset(task)["items"]:
        text = item[language]
        if task == "nli":
            words = NLI_WORDS[language]["labels"]
            rows.append({"id": item["id"], "label": item["label"],
                         "prompt": nli_prompt(text["premise"], text["hypothesis"], language),
                         **{o: " " + words[o] for o in OPTIONS["nli"]}})
        else:
            rows.append({"id": item["id"], "label": f"choice{item['correct']}",
                         "prompt": plausibility_prompt(text["premise"], item["relation"], language),
                         "choice1": " " + text["choice1"], "choice2": " " + text["choice2"]})
    return pd.DataFrame(rows).assign(task=task, language=language)


# --- scoring ------------------------------------------------------------------------------------

ROW_KEY = ["task", "language", "id"]


def score_rows(model, tokenizer, rows: pd.DataFrame, task: str, batch_size: int, bos: bool) -> pd.DataFrame:
    """Every option's log-likelihood (one pass per prompt: `score.score_answers`), the
    log-likelihood prediction, and for NLI the greedy continuation and its prediction."""
    options = OPTIONS[task]
    greedy = GREEDY_TOKENS if task == "nli" else 0
    one = score.score_answers(model, tokenizer, rows["prompt"], {o: list(rows[o]) for o in options},
                              batch_size, bos, generate=greedy)
    out = rows[ROW_KEY + ["label"]].reset_index(drop=True).copy()
    for o in options:
        out[f"loglik_{o}"] = one[f"loglik_{o}"]
        out[f"tokens_{o}"] = one[f"tokens_{o}"]
    out["pred_loglik"] = one[[f"loglik_{o}" for o in options]].to_numpy().argmax(1)
    out["pred_loglik"] = [options[i] for i in out["pred_loglik"]]
    out["correct_loglik"] = out["pred_loglik"] == out["label"]
    if greedy:
        out["continuation"] = one["continuation"]
        out["pred_greedy"] = [greedy_prediction(c, {o: r[o] for o in options})
                              for c, (_, r) in zip(one["continuation"], rows.iterrows())]
        out["correct_greedy"] = out["pred_greedy"] == out["label"]
    return out


def greedy_prediction(continuation: str, options: dict[str, str]) -> str:
    """The option the continuation starts with (the longest, if several do), else "none"."""
    hits = [o for o, text in options.items() if score.prefix_match(continuation, text)]
    return max(hits, key=lambda o: len(options[o])) if hits else "none"


def columns(task: str) -> list[str]:
    cols = ROW_KEY + ["label"] + [f"{c}_{o}" for o in OPTIONS[task] for c in ("loglik", "tokens")]
    cols += ["pred_loglik", "correct_loglik"]
    return cols + (["continuation", "pred_greedy", "correct_greedy"] if task == "nli" else [])


# --- runs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZeroShotRun:
    model: str
    task: str = "nli"
    languages: tuple[str, ...] = LANGUAGES
    batch_size: int = param("prompts per forward pass", 1, 1024, default=32)
    bos: bool | None = None   # None: what the registry says the model needs

    def resolved(self) -> "ZeroShotRun":
        """Checked against the registry, the tasks and the languages, before any model loads."""
        spec = models.check_model(self.model)
        check_task(self.task)
        for language in self.languages:
            check_language(language)
        validate(self)
        return replace(self, languages=tuple(self.languages), bos=spec.bos if self.bos is None else bool(self.bos))


def stem(model: str, task: str) -> str:
    return f"{model}.{task}"


def command(model: str, task: str) -> str:
    return f"python -m cpbook.llm.zero_shot {model} --task {task}"


def run(r: ZeroShotRun, out_dir: Path = RESULTS, progress: bool = True) -> pd.DataFrame:
    """Score every item of the task in every language and store the rows (out_dir/<model>.<task>
    .csv + .json). Each language is kept in the cache as it finishes, so an interrupted run
    resumes where it stopped."""
    r = r.resolved()
    origin = committed_provenance()
    work = cache.work_path("zero-shot", {**asdict(r), "weights": experiment.weights_key(r.model),
                                         "data_version": dataset(r.task)["version"]})
    todo = [lang for lang in r.languages if not cache.intact(work / f"{lang}.csv")]
    t0 = time.time()
    if todo:
        model, tokenizer = models.load(r.model)
        for language in console.progress(todo, show=progress, desc=f"scoring {r.model} on {r.task}"):
            part = score_rows(model, tokenizer, prompt_table(r.task, language), r.task, r.batch_size, r.bos)
            cache.write_text(work / f"{language}.csv", part.to_csv(index=False), checked=True)
    table = pd.concat([stored.read_rows(work / f"{lang}.csv") for lang in r.languages], ignore_index=True)
    stored.store(out_dir, stem(r.model, r.task), r.model, table, {**asdict(r), "data_version":
                 dataset(r.task)["version"]}, origin, time.time() - t0)
    return table


def load_results(model: str, task: str, results_dir: Path = RESULTS) -> tuple[pd.DataFrame, dict]:
    models.check_model(model)
    check_task(task)
    return stored.load(results_dir, stem(model, task), columns(task), command(model, task))


def recompute_rows(stored_rows: pd.DataFrame, record: dict, n: int, rng) -> pd.DataFrame:
    """Recompute `n` randomly chosen stored rows with the stored run's parameters; the stored and
    recomputed scores side by side (suffixes _stored and _now)."""
    r = ZeroShotRun(**{**{k: v for k, v in record["run"].items() if k != "data_version"},
                       "languages": tuple(record["run"]["languages"])}).resolved()
    pick = stored_rows.iloc[sorted(rng.choice(len(stored_rows), size=min(n, len(stored_rows)), replace=False))]
    table = pd.concat([prompt_table(r.task, lang) for lang in pick["language"].unique()], ignore_index=True)
    rows = pick[ROW_KEY].merge(table, on=ROW_KEY, how="left", validate="one_to_one")
    model, tokenizer = models.load(r.model)
    now = score_rows(model, tokenizer, rows, r.task, r.batch_size, r.bos)
    return pick.reset_index(drop=True).merge(now, on=ROW_KEY, suffixes=("_stored", "_now"))


# --- chapter 6 ----------------------------------------------------------------------------------

def check_chapter(base: str, tuned, cross_family, tasks, languages, reference: str) -> list[str]:
    """Chapter 6's parameters against the registry, the tasks, the languages and the stored
    results (which files exist; none is read), before any work; returns the models it names."""
    names = models.check_roles({"base": [base], "tuned": list(tuned), "cross_family": list(cross_family)})
    for t in tasks:
        named("tasks", check_task, t)
    for lang in languages:
        named("languages", check_language, lang)
    if reference not in languages:
        raise ParameterError(f"parameter 'reference' = {reference!r} is not among 'languages' = {list(languages)}")
    for name in names:
        for t in tasks:
            csv, meta = stored.files(RESULTS, stem(name, t))
            if not (csv.exists() and meta.exists()):
                raise FileNotFoundError(f"no stored {t} results for {name!r} (parameter 'tasks' = {list(tasks)}); "
                                        f"compute them with\n    {command(name, t)}")
    return names


def load_chapter(base: str, tuned, cross_family, tasks, languages, reference: str):
    """(results, records): results {task: {model: rows in `languages`}}, records {file stem:
    provenance record}; a clear error before any work on a bad name or a missing result."""
    names = check_chapter(base, tuned, cross_family, tasks, languages, reference)
    results, records = {}, {}
    for t in tasks:
        results[t] = {}
        for name in names:
            rows, record = load_results(name, t)
            missing = sorted(set(languages) - set(rows["language"]))
            if missing:
                raise ValueError(f"{stem(name, t)} was not scored in {', '.join(missing)}; compute it with\n"
                                 f"    {command(name, t)} --languages {' '.join(LANGUAGES)}")
            results[t][name] = rows[rows["language"].isin(languages)].reset_index(drop=True)
            records[stem(name, t)] = record
    return results, records


def scorers(task: str) -> tuple[str, ...]:
    """How a task is scored: by log-likelihood, and for NLI also by greedy decoding."""
    return ("loglik", "greedy") if task == "nli" else ("loglik",)


def with_margin(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows with `margin`: the correct option's log-likelihood minus the best other option's
    (nats; positive when the log-likelihood scorer is right). The graded measure: tuning can move
    it on the same item without flipping the prediction."""
    lik = df[[f"loglik_{o}" for o in OPTIONS[task]]].to_numpy()
    correct = np.array([OPTIONS[task].index(label) for label in df["label"]])
    rows = np.arange(len(df))
    own = lik[rows, correct]
    others = lik.copy()
    others[rows, correct] = -np.inf
    return df.assign(margin=own - others.max(1))


def accuracy_table(results: dict[str, pd.DataFrame], scorer: str = "loglik",
                   level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Accuracy per model and language with its Wilson interval (columns model, language, n,
    rate, low, high)."""
    return paired.rate_table(results, f"correct_{scorer}", "language", level)


def _value(scorer: str) -> str:
    """The column a scorer's comparison reads: correct_loglik, correct_greedy, or the margin."""
    return "margin" if scorer == "margin" else f"correct_{scorer}"


def drop_table(results: dict[str, pd.DataFrame], base: str, tuned, task: str, scorer: str = "loglik",
               level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per tuned model and language: the base's value (a), the tuned model's (b) and the drop
    a - b with its interval, paired by item. scorer "loglik" or "greedy" compares accuracy,
    "margin" the margin in nats."""
    return pd.concat([paired.difference_table(with_margin(results[base], task), with_margin(results[t], task),
                                              _value(scorer), "language", level=level).assign(model=t)
                      for t in tuned], ignore_index=True)


def gap_table(results: dict[str, pd.DataFrame], base: str, tuned, task: str, reference: str,
              scorer: str = "loglik", level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per tuned model and language: the reference's drop minus this language's drop, paired by item."""
    return pd.concat([paired.gap_vs_reference(with_margin(results[base], task), with_margin(results[t], task),
                                              _value(scorer), "language", reference, level=level).assign(model=t)
                      for t in tuned], ignore_index=True)


def prediction_shares(results: dict[str, pd.DataFrame], model: str, scorer: str = "loglik") -> pd.DataFrame:
    """How often a model predicts each option (or none), per language, in %: a model at chance
    often answers one label whatever the item."""
    df = results[model]
    return (100 * pd.crosstab(df["language"], df[f"pred_{scorer}"], normalize="index")).round(1).reindex(
        list(dict.fromkeys(df["language"])))


def format_differences(tables: dict[str, pd.DataFrame], scale: float, digits: int) -> pd.DataFrame:
    """Paired differences as text, mean [low, high], a row per tuned model, a column per
    (measure, language)."""
    parts = {}
    for measure, table in tables.items():
        cells = [f"{scale * d:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"
                 for d, lo, hi in zip(table["difference"], table["low"], table["high"])]
        wide = table.assign(cell=cells).pivot(index="model", columns="language", values="cell")
        parts[measure] = wide[list(dict.fromkeys(table["language"]))].reindex(list(dict.fromkeys(table["model"])))
    return pd.concat(parts, axis=1)


def format_accuracy(accuracy: dict[str, pd.DataFrame], base: str) -> pd.DataFrame:
    """Accuracy (%) with its 95% interval, a row per model and a column per task and language."""
    parts = {}
    for task, table in accuracy.items():
        cells = [f"{100 * r:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                 for r, lo, hi in zip(table["rate"], table["low"], table["high"])]
        wide = table.assign(cell=cells).pivot(index="model", columns="language", values="cell")
        parts[task] = wide[list(dict.fromkeys(table["language"]))]
    out = pd.concat(parts, axis=1)
    order = list(dict.fromkeys(next(iter(accuracy.values()))["model"]))
    return out.reindex(order)


def show_item(results: dict[str, dict[str, pd.DataFrame]], task: str, language: str, index: int) -> None:
    """Print one item's prompt and options, and each model's prediction (and continuation)."""
    item_id = dataset(task)["items"][index]["id"]
    row = prompt_table(task, language).set_index("id").loc[item_id]
    print(row["prompt"])
    print("\n  options: " + ", ".join(f"{o} {row[o]!r}" for o in OPTIONS[task]) + f"; correct: {row['label']}")
    for name, df in results[task].items():
        r = df[(df["language"] == language) & (df["id"] == item_id)].iloc[0]
        said = f", greedy {r['continuation']!r} -> {r['pred_greedy']}" if task == "nli" else ""
        print(f"  {name:>28}: log-likelihood -> {r['pred_loglik']}{said}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Score a model on an authored zero-shot task in four "
                                             "languages and store the rows under book/results/zero_shot/.")
    ap.add_argument("model", help=f"one of: {', '.join(models.REGISTRY)}")
    ap.add_argument("--task", choices=TASKS, default="nli")
    ap.add_argument("--languages", nargs="+", default=list(LANGUAGES))
    add_options(ap, ZeroShotRun)
    a = vars(ap.parse_args(argv))
    try:
        r = ZeroShotRun(a.pop("model"), a.pop("task"), tuple(a.pop("languages")), **a).resolved()
    except (ValueError, ParameterError) as err:
        raise SystemExit(f"cpbook.llm.zero_shot: {err}") from None
    table = run(r)
    print(table.groupby("language", sort=False)["correct_loglik"].mean().round(3).to_string())


if __name__ == "__main__":
    main()
