"""LoRA instruction tuning on the tiny random model, and the generated instruction data."""
import re

import numpy as np
import pytest
import torch

from cpbook.llm import instruct_data as D
from cpbook.llm import tune as T
from cpbook.llm.transforms import load_sentences
from cpbook.params import ParameterError
from conftest import make_tiny

CFG = T.TuneConfig(base="smollm2-135m-instruct", steps=6, batch_size=4, lr=1e-2, warmup_steps=1,
                   rank=4, checkpoint_every=3)   # the base only names a registered model here
PROBE = ["Input: What is 7 plus 12?\nOutput:", "Fill in the blank: ___ dog ran home."]


def _logits(model, tok):
    ids = tok(PROBE[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_starts_as_the_base_model_and_merges_exactly():
    model, tok = make_tiny()
    before = _logits(model, tok)
    wrapped = T.add_lora(model, CFG)
    assert len(wrapped) == 2 * 7   # two layers, seven projections each
    assert torch.equal(_logits(model, tok), before)          # B = 0: step 0 is the base model
    with torch.no_grad():
        for m in wrapped.values():
            m.lora_b.normal_()
    adapted = _logits(model, tok)
    assert not torch.allclose(adapted, before)
    T.merge_lora(model)
    assert not any(isinstance(m, T.LoRALinear) for m in model.modules())
    torch.testing.assert_close(_logits(model, tok), adapted, atol=1e-4, rtol=1e-4)


def test_training_moves_only_the_adapters_and_fits_a_batch(monkeypatch):
    model, tok = make_tiny()
    # A random head with RMS-normed inputs can only make near-uniform predictions; scaled up, the
    # adapters can make it confident, as a pretrained head is.
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    fixed = D.examples(0, 0, 4)
    monkeypatch.setattr(T.instruct_data, "examples", lambda seed, start, n: fixed[:n])
    history = T.train_lora(model, tok, T.TuneConfig(**{**CFG.__dict__, "steps": 80}), progress=False)
    for name, value in model.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, frozen[name.replace(".base.", ".")]), name
    losses = [h["loss"] for h in history]
    assert losses[0] > 5 and sum(losses[-5:]) / 5 < 0.5   # it learns the answers of the batch


def test_answer_loss_counts_only_answer_tokens():
    model, tok = make_tiny()
    batch = [{"prompt": "Input: What is 7 plus 12?\nOutput:", "answer": " 19"}]
    p = tok(batch[0]["prompt"], add_special_tokens=False)["input_ids"]
    a = tok(batch[0]["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0], -1)
        expected = -torch.stack([logp[len(p) - 1 + i, t] for i, t in enumerate(a)]).mean()
        got = T.answer_loss(model, tok, batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Padding a second, longer example into the batch leaves the first one's tokens unmasked
    # and the prompt tokens of both out of the loss.
    longer = batch + [{"prompt": "Fill in the blank: ___ dog ran home after a long day.", "answer": " The"}]
    with torch.no_grad():
        assert torch.isfinite(T.answer_loss(model, tok, longer))


def test_resume_gives_the_same_adapters_as_an_uninterrupted_run(tmp_path):
    model_a, tok = make_tiny()
    T.train_lora(model_a, tok, CFG, run_dir=tmp_path / "a", progress=False)
    model_b, _ = make_tiny()
    (tmp_path / "b").mkdir()
    T.train_lora(model_b, tok, CFG, run_dir=tmp_path / "b", stop_after=3, progress=False)
    model_c, _ = make_tiny()   # a fresh process would start from a fresh model
    T.train_lora(model_c, tok, CFG, run_dir=tmp_path / "b", progress=False)
    a, c = model_a.state_dict(), model_c.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_bad_tuning_config_fails_before_loading_anything(monkeypatch):
    from cpbook.llm import models
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(ParameterError, match="lr"):
        T.tune(T.TuneConfig(lr=-1.0))
    with pytest.raises(ParameterError, match="rank"):
        T.tune(T.TuneConfig(rank=0))
    with pytest.raises(ValueError, match="unknown model 'gemma-7b'"):
        T.tune(T.TuneConfig(base="gemma-7b"))


def test_instruction_data_is_deterministic_correct_and_english_only():
    assert D.examples(0, 0, 50) == D.examples(0, 0, 50)
    assert D.examples(0, 0, 50) != D.examples(1, 0, 50)
    assert D.examples(0, 10, 5) == D.examples(0, 0, 15)[10:]
    rows = D.examples(0, 0, 2000)
    assert {r["kind"] for r in rows} == set(D.KINDS) and {r["format"] for r in rows} == set(D.FORMATS)
    for r in rows:
        assert r["prompt"].isascii() and r["answer"].isascii()
        answer = r["answer"].strip()
        if r["kind"] == "math":
            assert int(answer) == _solve(r["instruction"]), r
        elif r["kind"] in ("blank_first", "blank_word"):
            filled = r["instruction"].split(": ", 1)[1].replace("___", answer)
            assert filled.endswith(".") and any(filled.startswith(s) for s in D.SUBJECTS), r
        elif r["kind"] in ("repeat", "upper", "lower"):
            sentence = r["instruction"].split(": ", 1)[1]
            assert answer == {"repeat": sentence, "upper": sentence.upper(), "lower": sentence.lower()}[r["kind"]]
        elif r["kind"] == "reverse_words":
            assert answer.split() == r["instruction"].split(": ", 1)[1].split()[::-1]
        elif r["kind"] == "count_words":
            assert int(answer) == len(r["instruction"].split("? ", 1)[1].split()), r
        assert r["instruction"] in r["prompt"] and r["prompt"].startswith(("Input", "Question", "###", r["instruction"]))
    # The chapter's ICL sentences never appear in the tuning data.
    icl = set(load_sentences()["en"])
    assert not any(D.sentence(np.random.default_rng(i)) in icl for i in range(500))


def _solve(prompt: str) -> int:
    """Invert the phrase templates: find the one that matches and apply its operator."""
    for op, phrases in D.MATH_PHRASES.items():
        for phrase in phrases:
            pattern = re.escape(phrase).replace(r"\{a\}", r"(?P<a>\d+)").replace(r"\{b\}", r"(?P<b>\d+)")
            m = re.search(pattern, prompt)
            if m:
                return D.OPS[op](int(m["a"]), int(m["b"]))
    raise AssertionError(f"no template matches {prompt!r}")
