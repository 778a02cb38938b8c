"""Chapter 5's task: ICL against instruction following, scored two ways from one encoding.

Every prompt of `build_prompts` is scored from one encoding (`score.score_answers`): the paper's
greedy prefix match (10 greedy tokens; correct when they start with the ICL answer) and the
log-likelihood margin log p(ICL answer) - log p(instruction answer), with each answer's length
in tokens and whether greedy decoding would emit it. Control prompts (no conflict) get the
greedy score and the ICL answer's log-likelihood. The run's parameters are `tasks.ICLRun`; the
runs themselves, stored under book/results/icl/, are `cpbook.llm.runner`'s (`cpbook score icl`).
"""
from __future__ import annotations

import pandas as pd

from cpbook.llm import prompts, score
from cpbook.llm.tasks import ICLRun, TASKS

TASK = TASKS["icl"]
ROW_KEY = ["surface", "task_pair", "index"]          # one prompt; with `control`, one stored row


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
    out = rows[list(TASK.key)].reset_index(drop=True).copy()
    out["continuation"] = one["continuation"]
    out["icl_correct"] = [score.prefix_match(c, a) for c, a in zip(one["continuation"], rows["icl_answer"])]
    out["if_correct"] = [isinstance(a, str) and score.prefix_match(c, a)
                         for c, a in zip(one["continuation"], rows["if_answer"])]
    for col in ("loglik_icl", "loglik_if", "tokens_icl", "tokens_if", "greedy_icl", "greedy_if"):
        out[col] = one[col]
    out["margin"] = out["loglik_icl"] - out["loglik_if"]
    out["margin_per_token"] = out["loglik_icl"] / out["tokens_icl"] - out["loglik_if"] / out["tokens_if"]
    return out


def with_answers(stored: pd.DataFrame, record: dict) -> pd.DataFrame:
    """Stored rows with their `prompt`, `icl_answer` and `if_answer` (rebuilt from the run's
    parameters: the rows store verdicts and scores, not the prompts)."""
    key = list(TASK.key)
    table = prompt_table(TASK.run_of(record), sorted(stored["surface"].unique()))
    return stored.merge(table[key + ["prompt", "icl_answer", "if_answer"]], on=key, how="left",
                        validate="one_to_one")


def rows_for(run: ICLRun, surface: str) -> pd.DataFrame:
    """The prompts one finished part of a run scores: one surface form's."""
    return prompt_table(run, [surface])


def summary(table: pd.DataFrame) -> pd.Series:
    """What `cpbook score icl` prints: the ICL accuracy per surface on the conflict prompts."""
    return table[~table["control"]].groupby("surface", sort=False)["icl_correct"].mean().round(3)
