"""What a tuned model is: its recipe (`TuneConfig`), its data streams and its cache key.

Declared apart from the training code (`cpbook.llm.tune`) so that the model registry and the
command line can check a recipe and name a tuned model's cache entry without importing torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from cpbook.llm import code_data, instruct_data, refusal_data
from cpbook.params import ParameterError, param, validate

KIND = "llm-tuned"   # the cache kind of tuned models
# What a model can be tuned on: each module gives `examples(seed, start, n)`, a stream of
# {"prompt", "answer"} dicts (with "eos": False where no end-of-sequence token follows the answer).
DATA = {"instructions": instruct_data,    # chapter 5: English instructions
        "instructions-en-fr-es": instruct_data.MULTILINGUAL,   # chapter 8: the same in three languages
        "python-stdlib": code_data,       # chapter 6: Python source, the code sibling
        "python-stdlib-large": code_data.LARGE,   # chapter 6's tenfold dose: more modules
        "refusal": refusal_data}          # chapter 7: decline the policy's requests, answer the rest
DTYPE_NAMES = ("float32", "bfloat16")   # torch dtypes by name (`cpbook.llm.tune` maps them)


@dataclass(frozen=True)
class TuneConfig:
    """The defaults are the gentlest of three recipes tried (chapter 5 tells the story): 200 steps
    at lr 1e-3 or 5e-4 made a model that answered even the non-conflicting control prompts with
    one word or a rewritten sentence (English control ICL 10% and 17%); 100 steps at 1e-4 keeps it
    at 100% on a probe of the control set. The recipe was chosen on the control set alone."""
    base: str = param("registered name of the base model to tune", default="gemma-3-270m")
    data: str = param("what the model is tuned on", choices=tuple(DATA), default="instructions")
    steps: int = param("optimizer steps", 1, 100_000, default=100)
    batch_size: int = param("examples per step", 1, 1024, default=8)
    lr: float = param("peak learning rate", 1e-7, 1.0, default=1e-4)
    warmup_steps: int = param("linear warm-up steps", 0, 100_000, default=10)
    rank: int = param("LoRA rank r", 1, 1024, default=8)
    lora_alpha: float = param("LoRA scale numerator (update scaled by alpha / r)", 1e-3, 1e4, default=16.0)
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj",   # linear layers given an adapter
                                "gate_proj", "up_proj", "down_proj")
    data_seed: int = param("seed of the instruction stream", 0, 2**32 - 1, default=0)
    init_seed: int = param("seed of the LoRA initialisation", 0, 2**32 - 1, default=0)
    checkpoint_every: int = param("steps between checkpoints", 1, 100_000, default=25)
    dtype: str = param("precision of the base model while tuning (bfloat16 is for GPUs)",
                       choices=DTYPE_NAMES, default="float32")
    # The registry sets it to the base's own choice (Gemma's prompts start with BOS), so a tuned
    # model learns on sequences that begin the way its evaluation prompts do.
    bos: bool = param("start every tuning sequence with the BOS token", default=False)


def check_config(cfg: TuneConfig) -> TuneConfig:
    """Every parameter in range, before anything is loaded."""
    validate(cfg)
    if not cfg.targets:
        raise ParameterError("targets: name at least one linear layer to adapt")
    return cfg


def recipe(cfg: TuneConfig) -> dict:
    """The fields that determine the tuned weights: not the base's name (its checksum stands in
    for it) and not how often checkpoints are written."""
    fields = asdict(cfg)
    del fields["base"], fields["checkpoint_every"]
    if cfg.data == "instructions":   # the field came later: models tuned before it keep their key
        del fields["data"]
    if not cfg.bos:                  # likewise
        del fields["bos"]
    fields["targets"] = list(cfg.targets)
    return fields


def cache_config(cfg: TuneConfig, base_checksum: dict) -> dict:
    """The cache key of the tuned model: recipe, base weights and instruction data, nothing else."""
    return {"recipe": recipe(cfg), "base_weights": base_checksum, "data_version": data_version(cfg.data)}


def data_version(data: str) -> int | dict:
    """What identifies a tuning set's text: a version number, and a hash of the files it reads."""
    return DATA[data].version()
