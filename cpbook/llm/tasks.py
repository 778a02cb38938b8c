"""The scored language-model tasks, declared once: what a run of each takes and where it is stored.

Every scored task is one `Task`: its run's parameters (`ICLRun`, `ZeroShotRun`, `RefusalRun`),
the column a run saves its work by (a surface form or a language: an interrupted run resumes
from the last finished one), the key of a row, the columns a stored file holds, the data version
it depends on and where its files go under book/results/. `cpbook.llm.runner` runs, stores,
loads and recomputes every task the same way; the task's module (`module`) builds its prompts
and scores them (`rows_for`, `score_rows`, `summary`).

| task           | chapter | a row                        | stored as                                 |
|----------------|---------|------------------------------|-------------------------------------------|
| `icl`          | 5, 8    | a prompt of a task pair      | `icl/<model>.csv` (`.demos<n>` for n != 2) |
| `nli`          | 6       | a premise-hypothesis item    | `zero_shot/<model>.nli.csv`               |
| `plausibility` | 6       | a cause-or-effect item       | `zero_shot/<model>.plausibility.csv`      |
| `refusal`      | 7       | a held-out request           | `refusal/<model>.csv`                     |

Nothing here imports torch, transformers or pandas: the command line checks a run, and a
chapter's parameters, before any of them loads. The chapters' own checks (which models, which
stored results) are here too, for the same reason.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

from cpbook import results
from cpbook.llm import prompts, refusal_data
from cpbook.llm.registry import check_model, check_roles
from cpbook.paths import DATA, RESULTS
from cpbook.params import ParameterError, named, one_of, param, param_like, validate

PAPER_DEMOS = 2   # the paper's number of demonstrations; results for others carry it in their name
ICL_SURFACES = ("en", "fr", "es", "nl", "hu", "de", "leetspeak", "pig_latin")
NLI_LANGUAGES = ("en", "fr", "es", "de")            # the authored zero-shot sets' languages
ZERO_SHOT_TASKS = ("nli", "plausibility")
REFUSAL_LANGUAGES = ("en", "fr", "es", "nl", "hu", "de")
REFUSAL_SURFACES = REFUSAL_LANGUAGES + ("leetspeak", "pig_latin")


def check_zero_shot_task(task: str) -> str:
    return one_of(task, ZERO_SHOT_TASKS, "zero-shot task")


def check_nli_language(language: str) -> str:
    return one_of(language, NLI_LANGUAGES, "zero-shot language")


def check_refusal_surface(surface: str) -> str:
    return one_of(surface, REFUSAL_SURFACES, "refusal surface")


@lru_cache(maxsize=None)
def dataset(task: str) -> dict:
    """An authored zero-shot set (`data/nli.json`, `data/plausibility.json`)."""
    check_zero_shot_task(task)
    return json.loads((DATA / f"{task}.json").read_text(encoding="utf-8"))


# --- the runs' parameters -----------------------------------------------------------------------

def _resolved(run, groups: str, check):
    """A run checked against the registry, its groups and every declared range, with BOS as the
    registry says the model needs unless given."""
    spec = check_model(run.model)
    for g in getattr(run, groups):
        named(groups, check, g)
    validate(run)
    bos = spec.bos if run.bos is None else bool(run.bos)
    return replace(run, **{groups: tuple(getattr(run, groups))}, bos=bos)


@dataclass(frozen=True)
class ICLRun:
    """Chapter 5's prompts, scored greedily (10 tokens) and by the log-likelihood margin."""
    model: str
    surfaces: tuple[str, ...] = ICL_SURFACES
    n_per_pair: int = param_like(prompts.PARAMS["n_per_pair"], default=100)
    n_control: int = param("control prompts per control pair", 0, 100_000, default=25)
    seed: int = param_like(prompts.PARAMS["seed"], default=0)
    n_demos: int = param_like(prompts.PARAMS["n_demos"], default=PAPER_DEMOS)
    max_new_tokens: int = param("greedy tokens generated", 1, 256, default=10)
    # 64: a decoding step costs about the same at 16 prompts as at 64 on a 2-core CPU
    batch_size: int = param("prompts per forward pass", 1, 1024, default=64)
    bos: bool | None = None   # None: what the registry says the model needs

    def resolved(self) -> ICLRun:
        return _resolved(self, "surfaces", prompts.check_surface)


@dataclass(frozen=True)
class ZeroShotRun:
    """Chapter 6's authored sets, in four languages, scored by log-likelihood (NLI also greedily)."""
    model: str
    task: str = "nli"
    languages: tuple[str, ...] = NLI_LANGUAGES
    batch_size: int = param("prompts per forward pass", 1, 1024, default=32)
    bos: bool | None = None

    def resolved(self) -> ZeroShotRun:
        named("task", check_zero_shot_task, self.task)
        return _resolved(self, "languages", check_nli_language)


@dataclass(frozen=True)
class RefusalRun:
    """Chapter 7's held-out requests, decoded greedily, with the fixed refusal's log-likelihood."""
    model: str
    surfaces: tuple[str, ...] = REFUSAL_SURFACES
    max_new_tokens: int = param("greedy tokens generated", 1, 256, default=24)
    batch_size: int = param("prompts per forward pass", 1, 1024, default=32)
    bos: bool | None = None

    def resolved(self) -> RefusalRun:
        return _resolved(self, "surfaces", check_refusal_surface)


# --- the tasks ----------------------------------------------------------------------------------

ICL_COLUMNS = ("surface", "task_pair", "index", "control", "continuation", "icl_correct", "if_correct",
               "loglik_icl", "loglik_if", "tokens_icl", "tokens_if", "greedy_icl", "greedy_if", "margin",
               "margin_per_token")


def nli_columns(task: str) -> tuple[str, ...]:
    options = ("entailment", "neutral", "contradiction") if task == "nli" else ("choice1", "choice2")
    cols = ("task", "language", "id", "label") + tuple(f"{c}_{o}" for o in options for c in ("loglik", "tokens"))
    cols += ("pred_loglik", "correct_loglik")
    return cols + (("continuation", "pred_greedy", "correct_greedy") if task == "nli" else ())


@dataclass(frozen=True)
class Task:
    name: str
    title: str                      # what the rows are, in an error message
    run_type: type                  # ICLRun, ZeroShotRun or RefusalRun
    module: str                     # builds and scores the prompts: rows_for, score_rows, summary
    folder: str                     # under book/results/
    work_kind: str                  # the cache kind of a run's finished parts
    group: str                      # the column a run saves its work by
    key: tuple[str, ...]            # what identifies a row
    columns: tuple[str, ...]        # a stored file's columns, in order
    may_be_missing: tuple[str, ...] = ()   # numeric columns that may be empty (read as NaN)
    fixed: tuple[tuple[str, object], ...] = ()   # run fields the task sets (a zero-shot set's name)

    @property
    def groups_field(self) -> str:
        """The run's field that lists the groups: surfaces or languages."""
        return "languages" if self.group == "language" else "surfaces"

    def make_run(self, model: str, **options):
        """This task's run of `model`, checked (ParameterError or ValueError before any work)."""
        return self.run_type(model, **dict(self.fixed), **options).resolved()

    def extras(self, run) -> dict:
        """What the task's data adds to a run's record and cache key (its version)."""
        if self.run_type is ZeroShotRun:
            return {"data_version": dataset(run.task)["version"]}
        if self.run_type is RefusalRun:
            return {"data": {"eval": refusal_data.eval_set()["version"], "refusal": refusal_data.refusal(),
                             "template": refusal_data.TEMPLATE}}
        return {}

    def record_of(self, run) -> dict:
        """The "run" of a stored record: the run's fields and the data version."""
        return {**asdict(run), **self.extras(run)}

    def run_of(self, record: dict):
        """The run a stored record describes (checked)."""
        names = {f.name for f in fields(self.run_type)}
        given = {k: v for k, v in record["run"].items() if k in names}
        given[self.groups_field] = tuple(given[self.groups_field])
        return self.run_type(**given).resolved()

    def stem(self, model: str, n_demos: int = PAPER_DEMOS) -> str:
        """A stored file's name without suffix. Stems hold dots ("qwen2.5-..."), so files are
        named by appending the suffix, never with Path.with_suffix."""
        stem = model if self.folder != "zero_shot" else f"{model}.{self.name}"
        if n_demos != PAPER_DEMOS:
            prompts.PARAMS["n_demos"].check(n_demos)
        return stem if n_demos == PAPER_DEMOS else f"{stem}.demos{n_demos}"

    def files(self, model: str, n_demos: int = PAPER_DEMOS, folder: Path | None = None) -> tuple[Path, Path]:
        """(rows .csv, provenance record .json) of a model's stored run."""
        where = Path(folder) if folder is not None else RESULTS / self.folder
        stem = self.stem(model, n_demos)
        return where / f"{stem}.csv", where / f"{stem}.json"

    def files_of(self, run, folder: Path | None = None) -> tuple[Path, Path]:
        """The files a run is stored in (only an ICL run has a number of demonstrations)."""
        return self.files(run.model, getattr(run, "n_demos", PAPER_DEMOS), folder)

    def command(self, model: str, n_demos: int = PAPER_DEMOS) -> str:
        """The command that computes a model's stored run."""
        demos = f" --n-demos {n_demos}" if n_demos != PAPER_DEMOS else ""
        return f"cpbook score {self.name} {model}{demos}"

    def stored(self, model: str, n_demos: int = PAPER_DEMOS, folder: Path | None = None) -> bool:
        return all(p.exists() for p in self.files(model, n_demos, folder))

    def missing(self, model: str, n_demos: int = PAPER_DEMOS, folder: Path | None = None) -> FileNotFoundError:
        """The error for a stored run that is not there: what is stored instead, and the command."""
        csv, _ = self.files(model, n_demos, folder)
        demos = f" with {n_demos} demonstrations" if self.run_type is ICLRun else ""
        have = stored_demos(model, folder) if self.run_type is ICLRun else []
        also = f"; stored for it: {', '.join(map(str, have))} demonstrations" if have else ""
        return FileNotFoundError(f"no stored {self.title} results for {model!r}{demos} ({csv.name} in "
                                 f"{csv.parent.name}/{also}); compute them with\n    {self.command(model, n_demos)}")


TASKS = {t.name: t for t in [
    Task("icl", "ICL-vs-instruction", ICLRun, "cpbook.llm.experiment", "icl", "icl", "surface",
         ("surface", "task_pair", "index", "control"), ICL_COLUMNS,
         may_be_missing=("loglik_icl", "loglik_if", "tokens_icl", "tokens_if", "margin", "margin_per_token")),
    *[Task(name, f"zero-shot {name}", ZeroShotRun, "cpbook.llm.zero_shot", "zero_shot", "zero-shot", "language",
           ("task", "language", "id"), nli_columns(name), fixed=(("task", name),)) for name in ZERO_SHOT_TASKS],
    Task("refusal", "refusal", RefusalRun, "cpbook.llm.refusal", "refusal", "refusal", "surface",
         ("surface", "id"), ("surface", "id", "kind", "continuation", "refused", "loglik_refusal",
                             "tokens_refusal", "greedy_refusal")),
]}


def check_task(name: str) -> Task:
    return TASKS[one_of(name, TASKS, "task")]


def stored_demos(model: str, folder: Path | None = None) -> list[int]:
    """The numbers of demonstrations a model has stored ICL results for."""
    icl = TASKS["icl"]
    where = Path(folder) if folder is not None else RESULTS / icl.folder
    out = []
    for meta in where.glob(f"{model}*.json"):
        if meta.name.endswith(".tuning.json"):
            continue
        n = results.read_json(meta)["run"].get("n_demos", PAPER_DEMOS)   # checked against its manifest
        if icl.files(model, n, where)[1] == meta and icl.stored(model, n, where):
            out.append(n)
    return sorted(out)


def require_stored(task: Task, model: str, n_demos: int = PAPER_DEMOS, asked: str | None = None) -> None:
    """FileNotFoundError (naming the parameter that asks for it) when a run is not stored."""
    if not task.stored(model, n_demos):
        err = task.missing(model, n_demos)
        raise FileNotFoundError(f"parameter {asked}: {err}" if asked else str(err))


# --- the chapters' checks, before any work ------------------------------------------------------

def check_icl_chapter(base: str, tuned: str, cross_family, reference: str = "en",
                      n_demos: int = PAPER_DEMOS, demo_counts=(PAPER_DEMOS,)) -> list[str]:
    """Chapter 5: the models, the reference surface and the stored prompt sets (which files
    exist; none is read); returns the models it names."""
    names = check_roles({"base": [base], "tuned": [tuned], "cross_family": list(cross_family)})
    named("reference", prompts.check_surface, reference)
    for n in [n_demos, *demo_counts]:
        prompts.PARAMS["n_demos"].check(n)
    # each prompt set, with the parameter that asks for it (the error names that parameter)
    wanted = {(name, n_demos): f"'n_demos' = {n_demos}" for name in names}
    for n in demo_counts:
        for name in (base, tuned):
            wanted.setdefault((name, n), f"'demo_counts' = {list(demo_counts)!r}")
    for (name, n), asked in wanted.items():
        require_stored(TASKS["icl"], name, n, asked)
    return names


def check_code_chapter(base: str, tuned, cross_family, tasks, languages, reference: str) -> list[str]:
    """Chapter 6: the models, the zero-shot sets, the languages and their stored runs."""
    names = check_roles({"base": [base], "tuned": list(tuned), "cross_family": list(cross_family)})
    for t in tasks:
        named("tasks", check_zero_shot_task, t)
    for lang in languages:
        named("languages", check_nli_language, lang)
    if reference not in languages:
        raise ParameterError(f"parameter 'reference' = {reference!r} is not among 'languages' = {list(languages)}")
    for name in names:
        for t in tasks:
            require_stored(TASKS[t], name, asked=f"'tasks' = {list(tasks)}")
    return names


def check_refusal_chapter(base: str, tuned, cross_family, surfaces, reference: str) -> list[str]:
    """Chapter 7: the models, the surface forms and the stored runs."""
    names = check_roles({"base": [base], "tuned": list(tuned), "cross_family": list(cross_family)})
    for s in surfaces:
        named("surfaces", check_refusal_surface, s)
    if reference not in surfaces:
        raise ParameterError(f"parameter 'reference' = {reference!r} is not among 'surfaces' = {list(surfaces)}")
    for name in names:
        require_stored(TASKS["refusal"], name)
    return names


def check_language_dose_chapter(base: str, english: str, multilingual: str, tuning_languages,
                                lm_doses) -> list[str]:
    """Chapter 8's language-model roles and languages; every model named must have stored
    ICL results (the error names the parameter and the command that makes them)."""
    names = check_roles({"base": [base], "english": [english], "multilingual": [multilingual]})
    check_roles({"lm_doses": list(lm_doses)})    # the English model may be one of the doses
    if base in lm_doses:
        raise ParameterError(f"parameter 'lm_doses' names the base {base!r}: list tuned models only")
    if not lm_doses:
        raise ParameterError("parameter 'lm_doses' is empty: name at least one tuned model")
    for lang in tuning_languages:
        named("tuning_languages", prompts.check_surface, lang)
    if not tuning_languages:
        raise ParameterError("parameter 'tuning_languages' is empty: name the languages the multilingual "
                             "model was tuned on")
    roles = {base: "base", english: "english", multilingual: "multilingual", **{n: "lm_doses" for n in lm_doses}}
    for name, role in roles.items():
        require_stored(TASKS["icl"], name, asked=repr(role))
    return list(dict.fromkeys([*names, *lm_doses]))
