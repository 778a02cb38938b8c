"""Chapter 2's fine-tuning variants beyond the paper, stored like chapter 8's dose grid.

Two variants of chapter 2's fine-tuning: with a share of D_cont prompts replayed, and on a new
set of N tasks. Each is a 400-step run, about a minute on 2 cores, so CI would spend two minutes
training them on every push. For the chapter's default parameters their predictions on the
chapter's evaluation prompts are stored under book/results/forgetting/, with the SHA-256 of the
weights at every step the run saved them; the chapter compares them with the models it trains
itself through `Evaluation.with_predictions`, exactly as if it had run them. Any other parameters
train the variants now.

CI's agreement check (tests/test_variants.py) retrains one variant, chosen at random, for a
random number of saved steps up to RECOMPUTE_STEPS, and requires the very same weights.
Fine-tuning is deterministic and its rate is constant after the warm-up, so a run stopped after
s steps is the stored run after s steps (chapter 8 relies on the same fact for its doses).
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import torch

from .. import cache, console, results
from ..paths import RESULTS as RESULTS_ROOT
from ..provenance import committed_provenance
from .config import FinetuneConfig, ForgettingVariants, SyntheticConfig, make_configs
from .evaluate import eval_prompts, predict
from .runs import Finetuned, finetuned, pretrained
from .tasks import Prompts

RESULTS = RESULTS_ROOT / "forgetting"
PREDICTIONS, RECORD = RESULTS / "variants.safetensors", RESULTS / "variants.json"
RECOMPUTE_STEPS = 100   # the most steps CI retrains of a stored variant


def variant_configs(ft: FinetuneConfig, variants: ForgettingVariants) -> dict[str, FinetuneConfig]:
    """Each variant's name (as the chapter's table shows it) and its fine-tuning config."""
    return {f"D_disc + {variants.replay:.0%} D_cont replay": replace(ft, ft_replay=variants.replay),
            "new task set": replace(ft, ft_task_seed=variants.other_task_seed)}


def run_key(cfg: SyntheticConfig, ft: FinetuneConfig, variants: ForgettingVariants) -> dict:
    """Everything the stored predictions depend on (in the JSON form they are stored with)."""
    return json.loads(json.dumps({"config": asdict(cfg), "finetune": asdict(ft), "variants": asdict(variants)}))


def weights_sha256(model: torch.nn.Module) -> str:
    """The SHA-256 of a model's weights: every tensor's name, dtype, shape and bytes, in order
    (independent of how a file stores them)."""
    def chunks():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode()
            yield t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return cache.sha256_bytes(chunks())


def _key(name: str, prior: str) -> str:
    return f"{name}|{prior}"


def _trained(cfg: SyntheticConfig, ft: FinetuneConfig, variants: ForgettingVariants,
             prompts: dict[str, Prompts], progress: bool) -> tuple[dict[str, Finetuned], dict]:
    """Each variant's run (trained now, or from the cache) and its predictions on `prompts`."""
    runs = {name: finetuned(cfg, vft, progress=progress) for name, vft in variant_configs(ft, variants).items()}
    preds = {name: {prior: predict(run.model, p) for prior, p in prompts.items()} for name, run in runs.items()}
    return runs, preds


def store_variants(cfg: SyntheticConfig, ft: FinetuneConfig, variants: ForgettingVariants,
                   progress: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """Train (or read from the cache) each variant, and store its predictions on the chapter's
    evaluation prompts under book/results/forgetting/ with its provenance: the parameters,
    package versions, commit, and the SHA-256 of the weights at every saved step."""
    origin = committed_provenance()
    pre = pretrained(cfg, progress=progress)
    prompts = eval_prompts(pre.tasks, cfg.tau, cfg.sigma, cfg.n_points, cfg.eval_prompts, cfg.eval_seed)
    runs, preds = _trained(cfg, ft, variants, prompts, progress)
    hashes = {name: {**{str(s): weights_sha256(run.at(s)) for s in run.snapshot_steps},
                     "final": weights_sha256(run.model)} for name, run in runs.items()}
    cache.save_tensors(PREDICTIONS, {_key(n, prior): t for n, by in preds.items() for prior, t in by.items()})
    results.record(PREDICTIONS)
    results.write_json(RECORD, {"run": run_key(cfg, ft, variants), "variants": list(preds),
                                "priors": list(prompts), "weights_sha256": hashes, **origin})
    return preds


def load_variants() -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The stored predictions {variant: {prior: (B, K)}} and their record, both checked against
    their SHA-256 (StoredResultError names a damaged file)."""
    record = results.read_json(RECORD)
    tensors = cache.load_tensors(results.check(PREDICTIONS))
    missing = [_key(n, p) for n in record["variants"] for p in record["priors"] if _key(n, p) not in tensors]
    if missing:
        raise results.StoredResultError(f"stored result {PREDICTIONS} lacks {', '.join(missing)}: "
                                        f"compute it again (python -m cpbook.synthetic.variants)")
    return {n: {p: tensors[_key(n, p)] for p in record["priors"]} for n in record["variants"]}, record


def variant_predictions(cfg: SyntheticConfig, ft: FinetuneConfig, variants: ForgettingVariants,
                        prompts: dict[str, Prompts], progress: bool = True
                        ) -> tuple[dict[str, dict[str, torch.Tensor]], dict | None]:
    """Each variant's predictions on `prompts` (the chapter's evaluation prompts): the stored
    ones when these are the stored run's parameters, else trained and predicted now. Returns
    (predictions {variant: {prior: (B, K)}}, the stored record or None)."""
    # the record is checked before it is parsed: a damaged one is refused, naming it, rather
    # than failing to parse or, edited, silently sending the chapter to train the variants
    if RECORD.exists() and results.read_json(RECORD)["run"] == run_key(cfg, ft, variants):
        console.say(f"fine-tuning variants: the stored predictions ({PREDICTIONS.name})")
        return load_variants()
    console.say("fine-tuning variants: not stored for these parameters, trained now")
    return _trained(cfg, ft, variants, prompts, progress)[1], None


def main() -> None:
    """Store chapter 2's variants (its default parameters, the `cpu` preset)."""
    cfg, ft = make_configs("cpu")
    preds = store_variants(cfg, ft, ForgettingVariants())
    print(f"stored the predictions of {', '.join(preds)} in {PREDICTIONS}")


if __name__ == "__main__":
    main()
