"""The cached runs: pretraining, then fine-tuning from a copy of the cached model."""
import torch

from cpbook.synthetic.config import make_configs
from cpbook.synthetic.runs import finetuned, pretrained


def tiny(**over):
    """A world and model small enough to pretrain and fine-tune in a second; `over` replaces any value."""
    values = dict(d=2, n_tasks=2, k_max=4, n_layer=1, n_embd=16, n_head=2, steps=20, warmup_steps=2,
                  batch_size=8, eval_prompts=10, ft_steps=10, ft_batch_size=8, monitor_every=5)
    return make_configs("cpu", **{**values, **over})


def test_finetuning_starts_from_the_cached_model_and_is_cached_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    cfg, ft = tiny()
    pre = pretrained(cfg, progress=False)
    before = {k: v.clone() for k, v in pre.model.state_dict().items()}
    tuned = finetuned(cfg, ft, progress=False)

    # fine-tuning changed a copy, not the pretrained model, and the pretrained tasks were used
    assert all(torch.equal(before[k], v) for k, v in pre.model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in tuned.model.state_dict().items())
    assert torch.equal(tuned.tasks, pre.tasks)
    monitored = [h["step"] for h in tuned.history if "monitor" in h]
    assert monitored == [0, 5, 10]
    assert set(tuned.history[0]["monitor"]) == {"D_disc", "D_cont"}

    # a second call loads both from the cache: same weights, nothing retrained
    again = finetuned(cfg, ft, progress=False)
    assert again.run_dir == tuned.run_dir
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), tuned.model.state_dict().values()))
    assert not (tuned.run_dir / "checkpoint.safetensors").exists()


def test_a_new_task_set_and_replay_are_separate_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    cfg, ft = tiny()
    plain = finetuned(cfg, ft, progress=False)
    cfg2, ft_new = tiny(ft_task_seed=7)
    new = finetuned(cfg2, ft_new, progress=False)
    assert new.run_dir != plain.run_dir
    assert not torch.equal(new.tasks, plain.tasks)
