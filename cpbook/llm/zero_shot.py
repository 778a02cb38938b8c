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

import numpy as np
import pandas as pd

from cpbook.llm import paired, runner, score
from cpbook.llm.tasks import (NLI_LANGUAGES as LANGUAGES, TASKS as ALL_TASKS, ZeroShotRun, check_code_chapter,
                              check_nli_language, dataset)
from cpbook.stats import LEVEL_FIGURES
from cpbook.verdicts import interval_texts

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
    check_nli_language(language)
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

def score_rows(model, tokenizer, rows: pd.DataFrame, run: ZeroShotRun) -> pd.DataFrame:
    """Every option's log-likelihood (one pass per prompt: `score.score_answers`), the
    log-likelihood prediction, and for NLI the greedy continuation and its prediction."""
    options = OPTIONS[run.task]
    greedy = GREEDY_TOKENS if run.task == "nli" else 0
    one = score.score_answers(model, tokenizer, rows["prompt"], {o: list(rows[o]) for o in options},
                              run.batch_size, run.bos, generate=greedy)
    out = rows[list(ALL_TASKS[run.task].key) + ["label"]].reset_index(drop=True).copy()
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


def rows_for(run: ZeroShotRun, language: str) -> pd.DataFrame:
    """The items one finished part of a run scores: one language's."""
    return prompt_table(run.task, language)


def summary(table: pd.DataFrame) -> pd.Series:
    """What `cpbook score nli` (or plausibility) prints: the log-likelihood accuracy per language."""
    return table.groupby("language", sort=False)["correct_loglik"].mean().round(3)


def greedy_prediction(continuation: str, options: dict[str, str]) -> str:
    """The option the continuation starts with (the longest, if several do), else "none"."""
    hits = [o for o, text in options.items() if score.prefix_match(continuation, text)]
    return max(hits, key=lambda o: len(options[o])) if hits else "none"


# --- chapter 6 ----------------------------------------------------------------------------------

def load_chapter(base: str, tuned, cross_family, tasks, languages, reference: str):
    """(results, records): results {task: {model: rows in `languages`}}, records {file stem:
    provenance record}; a clear error before any work on a bad name or a missing result."""
    names = check_code_chapter(base, tuned, cross_family, tasks, languages, reference)
    results, records = {}, {}
    for t in tasks:
        results[t] = {}
        for name in names:
            rows, record = runner.load(ALL_TASKS[t], name)
            missing = sorted(set(languages) - set(rows["language"]))
            if missing:
                raise ValueError(f"{ALL_TASKS[t].stem(name)} was not scored in {', '.join(missing)}; compute it "
                                 f"with\n    {ALL_TASKS[t].command(name)} --languages {' '.join(LANGUAGES)}")
            results[t][name] = with_norm(rows[rows["language"].isin(languages)].reset_index(drop=True), t)
            records[ALL_TASKS[t].stem(name)] = record
    return results, records


def scorers(task: str) -> tuple[str, ...]:
    """How a task is scored: by log-likelihood, summed and per character (`with_norm`), and for
    NLI also by greedy decoding."""
    return ("loglik", "norm", "greedy") if task == "nli" else ("loglik", "norm")


def with_norm(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows with `pred_norm` and `correct_norm`: lm-evaluation-harness's acc_norm, the option
    whose log-likelihood divided by its length in characters (without the space before it, as
    the harness counts) is highest. The summed log-likelihood favours a short option: "Faux" is
    one token, "Aucun des deux" four, and each token costs log-probability. Computed from the
    stored rows and the options' texts (`prompt_table`), so no model is run again."""
    options = OPTIONS[task]
    texts = pd.concat([prompt_table(task, lang) for lang in dict.fromkeys(df["language"])]).set_index(["language", "id"])
    texts = texts.loc[list(zip(df["language"], df["id"]))]
    chars = np.array([[len(t.lstrip()) for t in texts[o]] for o in options]).T
    per_char = df[[f"loglik_{o}" for o in options]].to_numpy() / chars
    pred = np.array(options)[per_char.argmax(1)]
    return df.assign(pred_norm=pred, correct_norm=pred == df["label"].to_numpy())


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
        cells = interval_texts(table["difference"], table["low"], table["high"], digits, scale)
        wide = table.assign(cell=cells).pivot(index="model", columns="language", values="cell")
        parts[measure] = wide[list(dict.fromkeys(table["language"]))].reindex(list(dict.fromkeys(table["model"])))
    return pd.concat(parts, axis=1)


def format_accuracy(accuracy: dict[str, pd.DataFrame], base: str) -> pd.DataFrame:
    """Accuracy (%) with its 95% interval, a row per model and a column per task and language."""
    parts = {}
    for task, table in accuracy.items():
        cells = interval_texts(table["rate"], table["low"], table["high"], 1, 100)
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
