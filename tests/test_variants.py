"""Chapter 2's stored fine-tuning variants: stored and read back as they were, refused when
damaged, trained now for other parameters, and CI's agreement check against the stored run."""
import re
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from cpbook import agreement
from cpbook.provenance import numerics_note, same_numerics
from cpbook.results import StoredResultError
from cpbook.synthetic import variants
from cpbook.synthetic.config import ForgettingVariants, make_configs
from cpbook.synthetic.evaluate import eval_prompts, evaluate, predict
from cpbook.synthetic.runs import finetune_model_now, finetuned, pretrained

from conftest import damage_record, sample_seed
from test_runs import tiny


@pytest.fixture
def stored_here(tmp_path, monkeypatch):
    """Store into tmp_path instead of book/results/forgetting."""
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(variants, "PREDICTIONS", tmp_path / "variants.safetensors")
    monkeypatch.setattr(variants, "RECORD", tmp_path / "variants.json")
    return tmp_path


def _prompts(cfg):
    pre = pretrained(cfg, progress=False)
    return pre, eval_prompts(pre.tasks, cfg.tau, cfg.sigma, cfg.n_points, cfg.eval_prompts, cfg.eval_seed)


def test_stored_variants_read_back_as_the_models_predict(stored_here):
    cfg, ft = tiny()
    extra = ForgettingVariants(replay=0.5, other_task_seed=7)
    with warnings.catch_warnings():   # the work tree of a test run may have uncommitted changes
        warnings.simplefilter("ignore")
        stored = variants.store_variants(cfg, ft, extra, progress=False)
    pre, prompts = _prompts(cfg)
    got, record = variants.variant_predictions(cfg, ft, extra, prompts, progress=False)
    assert record is not None and list(got) == ["D_disc + 50% D_cont replay", "new task set"]
    # what the chapter reads is what the variant models predict now, bit for bit
    for name, vft in variants.variant_configs(ft, extra).items():
        run = finetuned(cfg, vft, progress=False)
        ev = evaluate({name: run.model}, prompts, pre.tasks, cfg.sigma, cfg.tau, cfg.alpha)
        for prior in prompts:
            assert torch.equal(got[name][prior], ev.predictions[prior][name])
            assert torch.equal(got[name][prior], stored[name][prior])
        # every saved step has its weights' hash, and it is the hash of those weights
        hashes = record["weights_sha256"][name]
        assert set(hashes) == {"5", "10", "final"}
        assert hashes["5"] == variants.weights_sha256(run.at(5)) != hashes["10"]
        assert hashes["10"] == hashes["final"] == variants.weights_sha256(run.model)
    assert record["run"] == variants.run_key(cfg, ft, extra)

    # other parameters: trained now, nothing stored is read
    live, none = variants.variant_predictions(cfg, ft, replace(extra, replay=0.25), prompts, progress=False)
    assert none is None and "D_disc + 25% D_cont replay" in live

    # a damaged file is refused, naming it
    path = stored_here / "variants.safetensors"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(StoredResultError, match="variants.safetensors"):
        variants.variant_predictions(cfg, ft, extra, prompts, progress=False)


@pytest.fixture
def stored_copy(tmp_path, monkeypatch):
    """The stored variants and their manifest, copied into tmp_path and read from there; training
    the variants fails the test (the record asked for is the stored one)."""
    folder = tmp_path / "forgetting"
    shutil.copytree(variants.RESULTS, folder)
    monkeypatch.setattr(variants, "RESULTS", folder)
    monkeypatch.setattr(variants, "PREDICTIONS", folder / variants.PREDICTIONS.name)
    monkeypatch.setattr(variants, "RECORD", folder / variants.RECORD.name)

    def never(*args, **kwargs):
        raise AssertionError("the variants were trained: the damaged record was read as another run's")
    monkeypatch.setattr(variants, "_trained", never)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_a_damaged_record_is_refused_before_it_is_parsed(stored_copy, damage):
    """Truncated, the record would end in a JSONDecodeError naming no file; edited (another
    replay share), the chapter would silently train the variants as parameters not stored."""
    record = stored_copy / "variants.json"
    damage_record(record, damage, lambda r: r["run"]["variants"].update(replay=0.5))
    cfg, ft = make_configs("cpu")
    with pytest.raises(StoredResultError, match=re.escape(f"stored result {record} does not match")):
        variants.variant_predictions(cfg, ft, ForgettingVariants(), {}, progress=False)


def test_with_predictions_refuses_a_wrong_shape(stored_here):
    cfg, _ = tiny()
    pre, prompts = _prompts(cfg)
    ev = evaluate({"pretrained": pre.model}, prompts, pre.tasks, cfg.sigma, cfg.tau, cfg.alpha)
    wrong = {prior: torch.zeros(3, 2) for prior in prompts}
    with pytest.raises(ValueError, match="expected shape"):
        ev.with_predictions({"x": wrong})
    same = ev.with_predictions({"copy": {prior: ev.predictions[prior]["pretrained"] for prior in prompts}})
    assert same.output_matched_alpha("copy") == ev.output_matched_alpha("pretrained")


def test_the_weights_hash_sees_one_changed_value():
    model = torch.nn.Linear(3, 2)
    before = variants.weights_sha256(model)
    assert variants.weights_sha256(model) == before
    with torch.no_grad():
        model.weight[1, 2] = torch.nextafter(model.weight[1, 2], torch.tensor(9.0))
    assert variants.weights_sha256(model) != before


def test_a_sample_seed_is_replayed_from_the_environment_and_printed(monkeypatch, capsys):
    """conftest.sample_seed, which the agreement checks below and elsewhere draw their samples with."""
    monkeypatch.setenv("CPBOOK_TEST_SEED", "1234")
    assert sample_seed("things") == 1234
    assert capsys.readouterr().out == "random sample of things: seed 1234 (replay with CPBOOK_TEST_SEED=1234)\n"
    monkeypatch.delenv("CPBOOK_TEST_SEED")
    seeds = [sample_seed("things") for _ in range(3)]
    assert all(0 <= s < 2**32 for s in seeds) and len(set(seeds)) > 1     # fresh entropy each time
    out = capsys.readouterr().out
    assert all(f"seed {s} (replay with CPBOOK_TEST_SEED={s})" in out for s in seeds)


def test_the_stored_variants_are_the_chapters_and_a_random_one_recomputes():
    """CI's agreement check for chapter 2's stored variants: the record has the chapter's default
    parameters and a clean commit, and one variant, chosen at random, trained now for a random
    number of its saved steps up to RECOMPUTE_STEPS, has the very weights the stored run had
    then (CPBOOK_TEST_SEED repeats a draw). It needs the `cpu` preset's pretrained model
    (chapter 1's, cached for the chapters after)."""
    preds, record = variants.load_variants()
    cfg, ft = make_configs("cpu")
    assert record["run"] == variants.run_key(cfg, ft, ForgettingVariants()), \
        "the stored variants are not the chapter's: run python -m cpbook.synthetic.variants"
    assert not record["commit"].endswith("+dirty") and record["commit"] != "unknown"
    configs = variants.variant_configs(ft, ForgettingVariants())
    assert list(preds) == list(configs) == record["variants"]

    seed = sample_seed("the stored variants")
    rng = np.random.default_rng(seed)
    name = list(configs)[rng.integers(len(configs))]
    saved = sorted(int(s) for s in record["weights_sha256"][name] if s != "final")
    steps = int(rng.choice([s for s in saved if s <= variants.RECOMPUTE_STEPS]))
    if same_numerics(record.get("numerics")):
        model = finetune_model_now(cfg, configs[name], steps)
        assert variants.weights_sha256(model) == record["weights_sha256"][name][str(steps)], \
            f"{name} after {steps} steps (CPBOOK_TEST_SEED={seed}); {numerics_note(record.get('numerics'))}"
        return
    # Another kind of CPU rounds the last bits otherwise, so no weights can be the stored ones:
    # the whole run, trained here, must predict as the stored one did, its error at every k
    # within cpbook.agreement's tolerance (about a minute more)
    model = finetune_model_now(cfg, configs[name], configs[name].ft_steps)
    _, prompts = _prompts(cfg)
    for prior, p in prompts.items():
        now, stored = (((pred - p.ys.double()) ** 2).mean(0) for pred in (predict(model, p), preds[name][prior]))
        off = [k for k in range(len(now)) if not agreement.numbers_close(float(stored[k]), float(now[k]))]
        assert not off, (f"{name} on {prior}: error at k = {off} is {now[off].tolist()} here, "
                         f"{stored[off].tolist()} stored; {numerics_note(record.get('numerics'))}")
