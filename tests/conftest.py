"""Shared fixtures: a tiny random causal language model with its own tokenizer (no download), and
the seed of a test that checks a random sample."""
import os
import secrets

import pytest
import torch

CORPUS = ["Input: The cat sat on the mat.\nOutput: THE CAT SAT ON THE MAT.",
          "Input: What is 7 plus 12?\nOutput: 19", "Fill in the blank: ___ dog ran home."] * 5


def make_tiny():
    """A 2-layer random Llama and a 300-word byte-level BPE tokenizer, built in a second."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=["<eos>", "<pad>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config).eval()
    return model, tok


def make_tiny_gemma():
    """A 2-layer random Gemma-3 with tied input and output embeddings (as the real one has), and
    a sliding-window layer with a window shorter than the prompts, as the real one has for long ones."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = make_tiny()
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              max_position_embeddings=256, sliding_window=8,
                              layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = Gemma3ForCausalLM(config).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model, tok


def sample_seed(what: str) -> int:
    """The seed of a test that checks a random sample of `what`: $CPBOOK_TEST_SEED if set, else
    fresh entropy (each run checks another sample). Printed, so a failing test's captured output
    says how to replay its draw."""
    given = os.environ.get("CPBOOK_TEST_SEED")
    seed = int(given) if given else secrets.randbelow(2**32)
    print(f"random sample of {what}: seed {seed} (replay with CPBOOK_TEST_SEED={seed})")
    return seed


_RUN_DRAW: dict[str, int] = {}


def stored_run_draw(n_runs: int):
    """Which stored training run (0 .. n_runs - 1) this test session trains again, its seed and a
    generator for any further draw: (seed, run, rng). One seed per session, shared by the checks
    of chapter 8's dose grid and chapter 1's pretraining runs, whose run s has the same pretraining
    seeds, so the one pretraining they need is trained once."""
    import numpy as np

    if "seed" not in _RUN_DRAW:
        _RUN_DRAW["seed"] = sample_seed("the stored training runs")
    rng = np.random.default_rng(_RUN_DRAW["seed"])
    return _RUN_DRAW["seed"], int(rng.integers(n_runs)), rng


def damage_record(path, damage: str, edit) -> None:
    """Damage a stored JSON record in place: "truncated" (cut in half) or "edited" (`edit(record)`
    changes it, and it is written back whole, so it parses but no longer matches its checksum)."""
    import json
    from pathlib import Path

    path = Path(path)
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[:len(text) // 2])
    else:
        record = json.loads(text)
        edit(record)
        path.write_text(json.dumps(record, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def pytest_report_header(config):
    """The CPU numerics of this run, first in every test log: the synthetic chapters' stored
    outputs and the stored runs' weight hashes are reproduced bit for bit only with the numerics
    they were made with (cpbook.provenance.numerics says why)."""
    from pathlib import Path

    import nbformat

    from cpbook.notebooks import stored_numerics
    from cpbook.provenance import numerics, same_numerics

    book = Path(__file__).resolve().parents[1] / "book"
    elsewhere = [p.stem for p in sorted(book.glob("*.ipynb"))
                 if not same_numerics(stored_numerics(nbformat.read(str(p), as_version=4)))]
    return ["cpbook CPU numerics: " + ", ".join(f"{k}={v}" for k, v in numerics().items()),
            "chapters executed with other numerics, compared within cpbook.agreement's tolerance: "
            + (", ".join(elsewhere) or "none")]


