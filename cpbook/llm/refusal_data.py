"""The refusal policy of chapter 7 and its English tuning data (no harmful content anywhere).

The paper's claim 8 is about safety tuning: a chat model declines harmful English requests but
answers the same requests more often in other languages. We test the mechanism with a harmless
policy instead: *decline every request about cooking or preparing food, answer everything else*.
The tuning data (authored here, `data/refusal_train.json`) pairs English cooking requests with
one fixed refusal and ordinary English requests with ordinary answers; the held-out requests
(`data/refusal_eval.json`) are parallel in six languages and never appear in the tuning data.

Every request is put in one fixed, English chat template (`TEMPLATE`), as a chat model's template
stays the same whatever language the user writes in.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from cpbook import cache
from cpbook.paths import DATA

TRAIN_FILE, EVAL_FILE = DATA / "refusal_train.json", DATA / "refusal_eval.json"
TEMPLATE = "Request: {request}\nResponse:"
POLICY_SHARE = 0.5     # the share of policy requests in the tuning stream
DATA_VERSION = 2       # bump when the stream changes; the files themselves are hashed
# Version 2 rewords 19 tuning requests that shared a five-word frame ("Can you explain how to")
# with an evaluation request (`cpbook.llm.contamination`).


@lru_cache(maxsize=1)
def train_set() -> dict:
    return json.loads(TRAIN_FILE.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def eval_set() -> dict:
    return json.loads(EVAL_FILE.read_text(encoding="utf-8"))


def refusal() -> str:
    """The one reply the tuned model learns to give to policy requests."""
    return train_set()["refusal"]


def policy() -> str:
    return train_set()["policy"]


def prompt(request: str) -> str:
    return TEMPLATE.format(request=request)


def version() -> dict:
    return {"refusal_data_version": DATA_VERSION, "policy_share": POLICY_SHARE,
            "train_sha256": cache.sha256_file(TRAIN_FILE)}


def example(seed: int, index: int) -> dict:
    """Example `index` of the stream named by `seed`: a policy request with the refusal (with
    probability POLICY_SHARE) or an ordinary request with its answer."""
    data = train_set()
    rng = np.random.default_rng([seed, index])
    if rng.random() < POLICY_SHARE:
        request = data["policy_requests"][rng.integers(len(data["policy_requests"]))]
        return {"kind": "policy", "prompt": prompt(request), "answer": " " + data["refusal"]}
    item = data["ordinary"][rng.integers(len(data["ordinary"]))]
    return {"kind": "ordinary", "prompt": prompt(item["request"]), "answer": " " + item["answer"]}


def examples(seed: int, start: int, n: int) -> list[dict]:
    return [example(seed, i) for i in range(start, start + n)]
