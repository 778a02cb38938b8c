"""The scorers put each tensor on the device of what it meets, not on `model.device` (issue #28).

A model sharded with device_map="auto" reports its first parameter's device, while its logits
come out on the last device and each layer's cache stays on its own. No second device here, so
the tiny model is made to report a device it does not live on (meta): any tensor the scorers
still put on `model.device` then lands where nothing can combine with it."""
import pandas as pd
import pytest
import torch

from cpbook.llm import score
from conftest import make_tiny, make_tiny_gemma

PROMPTS = ["Input: The cat sat.\nOutput:", "Input: What is 7 plus 12 and then some more?\nOutput:",
           "Fill in the blank:", "Input: dog\nOutput: DOG\n\nInput: cat\nOutput:"]
# answers of one and several tokens, and a prompt without one
ANSWERS = {"icl": [" THE", " 19 and", " dog ran", " CAT"], "if": [" The cat", None, " ___", " c"]}


def reporting_meta(model):
    """The same model (same weights, on the CPU), but `model.device` says meta."""
    cls = type(model)
    model.__class__ = type(cls.__name__, (cls,), {"device": property(lambda self: torch.device("meta"))})
    assert model.device.type == "meta" and model.get_input_embeddings().weight.device.type == "cpu"
    return model


@pytest.mark.parametrize("build", [make_tiny, make_tiny_gemma], ids=["llama", "gemma-3 (sliding window)"])
def test_scores_do_not_depend_on_the_reported_device(build):
    model, tok = build()
    expected = score.score_answers(model, tok, PROMPTS, ANSWERS, batch_size=3, generate=4)
    logliks = score.continuation_logliks(model, tok, PROMPTS, ANSWERS["icl"], batch_size=3)
    model = reporting_meta(model)
    got = score.score_answers(model, tok, PROMPTS, ANSWERS, batch_size=3, generate=4)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (score.continuation_logliks(model, tok, PROMPTS, ANSWERS["icl"], batch_size=3) == logliks).all()
