"""LoRA instruction tuning (through peft) on tiny random models, and the generated instruction data."""
import re
from collections import Counter

import numpy as np
import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM

from cpbook import cache
from cpbook.llm import instruct_data as D
from cpbook.llm import models, registry, runner
from cpbook.llm import tune as T
from cpbook.llm.tune_config import recipe
from cpbook.llm.transforms import load_sentences
from cpbook.params import ParameterError
from conftest import make_tiny, make_tiny_gemma as tiny_gemma

CFG = T.TuneConfig(base="smollm2-135m-instruct", steps=6, batch_size=4, lr=1e-2, warmup_steps=1,
                   rank=4, checkpoint_every=3)   # the base only names a registered model here
PROBE = ["Input: What is 7 plus 12?\nOutput:", "Fill in the blank: ___ dog ran home."]


def _logits(model, tok):
    ids = tok(PROBE[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def _fixed_batch(monkeypatch, n=4):
    """Every step sees the same examples (to check that training can fit them)."""
    fixed = D.examples(0, 0, n)
    monkeypatch.setattr(D, "examples", lambda seed, start, count: fixed[:count])


def _confident_head(model):
    # A random head with RMS-normed inputs can only make near-uniform predictions; scaled up, the
    # adapters can make it confident, as a pretrained head is.
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


def test_lora_starts_as_the_base_model_and_merges_exactly():
    model, tok = make_tiny()
    before = _logits(model, tok)
    lora = T.add_lora(model, CFG)
    layers = [m for m in lora.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * 7   # two layers, seven projections each
    assert torch.equal(_logits(lora, tok), before)          # B = 0: step 0 is the base model
    with torch.no_grad():
        for m in layers:
            m.lora_B["default"].weight.normal_()
    adapted = _logits(lora, tok)
    assert not torch.allclose(adapted, before)
    merged = lora.merge_and_unload()
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    torch.testing.assert_close(_logits(merged, tok), adapted, atol=1e-4, rtol=1e-4)


def test_the_adapters_are_seeded():
    a = T.add_lora(make_tiny()[0], CFG)
    b = T.add_lora(make_tiny()[0], CFG)
    c = T.add_lora(make_tiny()[0], T.TuneConfig(**{**CFG.__dict__, "init_seed": 1}))
    sa, sb, sc = (T.adapter_parameters(m).state_dict() for m in (a, b, c))
    assert len(sa) == 2 * 2 * 7 and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if "lora_A" in k)


def test_training_moves_only_the_adapters_and_fits_a_batch(monkeypatch):
    model, tok = make_tiny()
    _confident_head(model)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    _fixed_batch(monkeypatch)
    lora = T.add_lora(model, CFG)
    # 150 steps: at 80 the final loss depends on the seed of A (0.5 to 1.6 over seeds 0-2);
    # at 150 it is below 0.2 for each of them.
    history = T.train_lora(lora, tok, T.TuneConfig(**{**CFG.__dict__, "steps": 150}), progress=False)
    moved = 0
    for name, value in model.state_dict().items():
        if "lora_" in name:
            moved += not torch.equal(value, torch.zeros_like(value))
        else:
            assert torch.equal(value, frozen[name.replace(".base_layer.", ".")]), name
    assert moved == 2 * 2 * 7
    losses = [h["loss"] for h in history]
    assert len(losses) == 150 and losses[0] > 5 and sum(losses[-5:]) / 5 < 0.5   # it learns the answers


def test_bfloat16_tuning_runs_and_fits_a_batch_on_the_cpu(monkeypatch):
    """The GPU recipe for large models (base in bfloat16, adapters and loss in float32), run on
    the CPU for a few steps: it must run, and the loss on a fixed batch must fall."""
    model, tok = make_tiny()
    _confident_head(model)
    _fixed_batch(monkeypatch, 2)
    cfg = T.TuneConfig(**{**CFG.__dict__, "dtype": "bfloat16", "steps": 4, "batch_size": 2, "warmup_steps": 0})
    lora = T.add_lora(T.place(model, cfg), cfg)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in T.adapter_parameters(lora).parameters())
    batch = D.examples(0, 0, 2)
    assert T.answer_loss(lora, tok, batch).dtype == torch.float32
    losses = [h["loss"] for h in T.train_lora(lora, tok, cfg, progress=False)]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


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
    T.train_lora(T.add_lora(model_a, CFG), tok, CFG, run_dir=tmp_path / "a", progress=False)
    model_b, _ = make_tiny()
    (tmp_path / "b").mkdir()
    T.train_lora(T.add_lora(model_b, CFG), tok, CFG, run_dir=tmp_path / "b", stop_after=3, progress=False)
    model_c, _ = make_tiny()   # a fresh process would start from a fresh model
    history = T.train_lora(T.add_lora(model_c, CFG), tok, CFG, run_dir=tmp_path / "b", progress=False)
    a, c = model_a.state_dict(), model_c.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [h["step"] for h in history] == list(range(CFG.steps))


def test_a_tuned_gemma_is_cached_and_reloads_with_the_same_logits(tmp_path, monkeypatch):
    """tune() end to end on a tiny Gemma-3: train, merge, save into the cache; the saved folder
    reloads with from_pretrained to the logits of the same recipe merged in memory."""
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    cfg = T.TuneConfig(**{**CFG.__dict__, "base": "tiny-gemma", "steps": 4})
    base_checksum = {"gguf_sha256": "0" * 64}
    folder = T.tune(cfg, base_checksum, tiny_gemma, progress=False)

    model, tok = tiny_gemma()
    lora = T.add_lora(model, cfg)
    history = T.train_lora(lora, tok, cfg, progress=False)
    merged = lora.merge_and_unload()
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert isinstance(reloaded, Gemma3ForCausalLM) and reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    assert not torch.allclose(_logits(merged, tok), _logits(tiny_gemma()[0], tok))   # tuning changed it
    torch.testing.assert_close(_logits(reloaded, tok), _logits(merged, tok), atol=1e-5, rtol=1e-5)

    entry = cache.read_entry(folder)
    assert entry["loss_history"] == history and entry["tune_config"]["steps"] == 4
    assert entry["weights_sha256"] == {"model.safetensors": cache.sha256_file(folder / "model.safetensors")}
    assert entry["config"] == {"recipe": recipe(cfg), "base_weights": base_checksum,
                               "data_version": D.DATA_VERSION}
    assert not folder.with_suffix(".work").exists()
    # What does not change the weights does not change the entry: nothing is retrained.
    again = T.TuneConfig(**{**cfg.__dict__, "checkpoint_every": 1, "base": "another-name"})
    assert T.tune(again, base_checksum, lambda: pytest.fail("retrained"), progress=False) == folder


def test_a_registered_tuned_model_records_real_checksums(tmp_path, monkeypatch):
    """A TunedSource in the registry: models.load tunes it (the base loader is the tiny Gemma
    here), and the stored records hold the base GGUF's pinned hash and the merged weights'."""
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    real_load = models.load
    monkeypatch.setattr(models, "load", lambda spec: tiny_gemma() if spec.name == "gemma-3-270m" else real_load(spec))
    monkeypatch.setattr(models, "require_loadable", lambda spec: None)   # the stand-in base loads
    spec = registry.register(registry.ModelSpec("tiny-instruct", "instruction-tuned", "gemma-3", registry.TunedSource(
        "gemma-3-270m", (("steps", 2), ("batch_size", 2), ("rank", 2)))))
    try:
        assert spec.source.folder(spec) is None        # not tuned yet: nothing in the cache
        model, tok = real_load(spec)
        assert isinstance(model, Gemma3ForCausalLM) and not model.training
        folder = spec.source.folder(spec)
        assert spec.key() == folder.name
        checksum = spec.checksum()
        assert checksum == {"base_gguf_sha256": registry.REGISTRY["gemma-3-270m"].source.sha256,
                            "weights_sha256": {"model.safetensors": cache.sha256_file(folder / "model.safetensors")}}
        runner.save_tuning_record(spec, tmp_path)
        record = cache.read_json(tmp_path / "tiny-instruct.tuning.json")
        assert record["config"]["steps"] == 2 and len(record["loss_history"]) == 2   # what chapter 5 reads
        assert record["checksum"] == checksum and record["model"] == "tiny-instruct"
    finally:
        del registry.REGISTRY["tiny-instruct"]


def test_the_cache_key_holds_the_recipe_the_base_and_the_data_only():
    key = T.cache_config(CFG, {"gguf_sha256": "0" * 64})
    assert set(key) == {"recipe", "base_weights", "data_version"}
    assert "checkpoint_every" not in key["recipe"] and "base" not in key["recipe"]
    for change in ({"lr": 2e-2}, {"rank": 8}, {"dtype": "bfloat16"}, {"targets": ("q_proj",)}, {"data_seed": 1}):
        assert T.cache_config(T.TuneConfig(**{**CFG.__dict__, **change}), {"gguf_sha256": "0" * 64}) != key
    assert T.cache_config(CFG, {"gguf_sha256": "1" * 64}) != key


def test_bad_tuning_config_fails_before_loading_anything(monkeypatch):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded a model"))
    never = lambda: pytest.fail("loaded a model")  # noqa: E731
    with pytest.raises(ParameterError, match="lr"):
        T.tune(T.TuneConfig(lr=-1.0), {}, never)
    with pytest.raises(ParameterError, match="rank"):
        T.tune(T.TuneConfig(rank=0), {}, never)
    with pytest.raises(ParameterError, match="dtype"):
        T.tune(T.TuneConfig(dtype="float16"), {}, never)
    with pytest.raises(ValueError, match="unknown model 'gemma-7b'"):
        models.build_tuned(registry.ModelSpec("x", "instruction-tuned", "gemma", registry.TunedSource("gemma-7b")))


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
        elif r["kind"] == "blank_word":
            filled = r["instruction"].split(": ", 1)[1].replace(D.BLANK, answer)
            assert filled.endswith(".") and any(filled.startswith(s) for s in D.SUBJECTS), r
        elif r["kind"] in ("repeat", "upper", "lower"):
            sentence = r["instruction"].split(": ", 1)[1]
            assert answer == {"repeat": sentence, "upper": sentence.upper(), "lower": sentence.lower()}[r["kind"]]
        elif r["kind"] == "reverse_words":
            assert answer.split() == r["instruction"].split(": ", 1)[1].split()[::-1]
        elif r["kind"] == "count_words":
            assert int(answer) == len(r["instruction"].split("? ", 1)[1].split()), r
        assert r["instruction"] in r["prompt"] and r["prompt"].startswith(("Question", "###", r["instruction"]))
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
                return D.OPERATORS[op](int(m["a"]), int(m["b"]))
    raise AssertionError(f"no template matches {prompt!r}")


# --- the other tuning sets (chapters 6 and 7) and the siblings made from them ---------------------

def test_the_code_stream_is_deterministic_whole_lines_and_hashed():
    from cpbook.llm import code_data
    assert code_data.examples(0, 5, 3) == code_data.examples(0, 5, 3)
    assert code_data.examples(0, 0, 3) != code_data.examples(1, 0, 3)
    chunks = code_data.chunks()
    assert all(code_data.MIN_CHARS <= len(c.strip()) and len(c) <= code_data.CHUNK_CHARS for _, c in chunks)
    # one epoch visits every chunk once
    epoch = {code_data.example(0, i)["answer"] for i in range(len(chunks))}
    assert len(epoch) == len({c for _, c in chunks})
    ex = code_data.example(0, 0)
    assert ex["eos"] is False and ex["prompt"].startswith("# Python standard library: ")
    v = code_data.version()
    assert len(v["sources_sha256"]) == 64 and v["chunks"] == len(chunks)


def test_no_end_of_sequence_is_learned_after_a_chunk_of_code():
    """With "eos": False the answer's own tokens are the only targets; by default the
    end-of-sequence token after the answer is one too."""
    _, tok = make_tiny()
    code = {"prompt": "# a.py\n", "answer": " x = 1", "eos": False}
    answer = tok(code["answer"], add_special_tokens=False)["input_ids"]
    _, _, targets = T.answer_targets(tok, [code])
    assert targets[0][targets[0] != -100].tolist() == answer
    _, _, targets = T.answer_targets(tok, [{**code, "eos": True}])
    assert targets[0][targets[0] != -100].tolist() == answer + [tok.eos_token_id]


def test_with_bos_every_tuning_sequence_starts_as_an_evaluation_prompt_does():
    _, tok = make_tiny()
    ex = [{"prompt": "Add 2 and 3.\n", "answer": "5"}, {"prompt": "Repeat this sentence: a b c.\n", "answer": "a b c."}]
    with pytest.raises(ValueError, match="no BOS token"):
        T.answer_targets(tok, ex, bos=True)
    tok.add_special_tokens({"bos_token": "<bos>"})
    ids, mask, targets = T.answer_targets(tok, ex, bos=True)
    plain, plain_mask, plain_targets = T.answer_targets(tok, ex)
    for row in range(len(ex)):
        real = ids[row][mask[row].bool()].tolist()
        assert real[0] == tok.bos_token_id and real[1:] == plain[row][plain_mask[row].bool()].tolist()
    assert torch.equal(targets, plain_targets)    # BOS is context, never a target


def test_every_sibling_names_a_data_set_and_fields_added_later_keep_old_keys():
    siblings = {n: registry.REGISTRY[n] for n in registry.tuned_models()}
    assert {"gemma-3-270m-instruct", "gemma-3-270m-code", "gemma-3-270m-code-strong",
            "gemma-3-270m-refusal", "gemma-3-270m-refusal-strong"} <= set(siblings)
    for name, spec in siblings.items():
        cfg = T.check_config(spec.source.config())
        assert cfg.data in T.DATA
    # the data field joined the key later: the instruction-tuned model's key does not carry it
    assert "data" not in recipe(registry.REGISTRY["gemma-3-270m-instruct"].source.config())
    assert "bos" not in recipe(T.TuneConfig()) and recipe(T.TuneConfig(bos=True))["bos"] is True
    code, strong = (registry.REGISTRY[n].source.config() for n in ("gemma-3-270m-code", "gemma-3-270m-code-strong"))
    assert code.lr < strong.lr and code.steps == strong.steps    # two doses of one recipe


def test_cpbook_tune_names_the_models_it_can_make():
    from cpbook.cli import main
    with pytest.raises(SystemExit, match="gemma-3-270m-code-strong"):
        main(["tune", "gemma-3-270m-codex"])


def test_the_large_code_corpus_holds_ten_doses_of_the_recipe_without_replacement():
    """Chapter 6's tenfold dose: 800 steps of 4 chunks, every chunk a different one, from a
    corpus that contains the recipe's."""
    from cpbook.llm import code_data
    from cpbook.llm.registry import check_model
    recipe, large = (check_model(n).source.config() for n in ("gemma-3-270m-code", "gemma-3-270m-code-10x"))
    assert large.steps * large.batch_size == 10 * recipe.steps * recipe.batch_size
    assert large.data == "python-stdlib-large" and large.lr == recipe.lr
    assert set(code_data.MODULES) < set(code_data.LARGE_MODULES)
    assert len(code_data.chunks(code_data.LARGE_MODULES)) >= large.steps * large.batch_size
    # drawn without replacement: no chunk more often than the pool holds it
    drawn = Counter((e["prompt"], e["answer"]) for e in
                    code_data.LARGE.examples(large.data_seed, 0, large.steps * large.batch_size))
    pool = Counter((f"# Python standard library: {n}\n", c) for n, c in code_data.chunks(code_data.LARGE_MODULES))
    assert sum(drawn.values()) == 3200 and all(pool[k] >= n for k, n in drawn.items())
    assert code_data.LARGE.version()["chunks"] == sum(pool.values()) and code_data.LARGE.version() != code_data.version()
