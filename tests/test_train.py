import pytest
import torch

from cpbook.fit import FitSpec, fit, lr_at
from cpbook.synthetic.model import InContextRegressor, ModelSize
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts
from cpbook.synthetic.train import TrainSpec, train

D, K = 2, 6


def fresh_model():
    torch.manual_seed(0)
    return InContextRegressor(D, K, ModelSize(2, 32, 2))


def prior():
    return Prior(discrete_tasks(4, D, 1.0, 0), 1.0, 0.5)


def held_out_loss(model):
    p = sample_prompts(prior(), 512, K, 0.5, 99, "held-out")
    with torch.no_grad():
        return ((model(p.xs, p.ys) - p.ys) ** 2).mean().item()


def test_short_training_learns_from_the_context():
    """Predicting 0 everywhere scores E[y^2]; only a model that reads the in-context examples
    gets well below that (at initialisation it does no better than 0)."""
    p = sample_prompts(prior(), 512, K, 0.5, 99, "held-out")
    predict_zero = (p.ys**2).mean().item()
    model = fresh_model()
    before = held_out_loss(model)
    train(model, prior(), TrainSpec(steps=200, lr=3e-3, batch_size=32, sigma=0.5, data_seed=1,
                                    warmup_steps=10), progress=False)
    after = held_out_loss(model)
    assert before > 0.99 * predict_zero and after < 0.85 * predict_zero, (before, after, predict_zero)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    spec = TrainSpec(steps=30, lr=3e-3, batch_size=16, sigma=0.5, data_seed=1, warmup_steps=5,
                     checkpoint_every=7)
    whole = fresh_model()
    train(whole, prior(), spec, progress=False)

    interrupted = fresh_model()
    train(interrupted, prior(), spec, run_dir=tmp_path, stop_after=17, progress=False)
    assert (tmp_path / "checkpoint.safetensors").exists()
    resumed = fresh_model()                         # a new process would start from scratch weights
    history = train(resumed, prior(), spec, run_dir=tmp_path, progress=False)

    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert history[-1]["step"] == 29


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    def lr(step):
        return lr_at(step, peak=1.0, warmup_steps=10, total_steps=100, floor_ratio=0.1)
    assert lr(0) == 0.1 and lr(9) == 1.0
    assert lr(10) == 1.0
    assert abs(lr(100) - 0.1) < 1e-12 and abs(lr(150) - 0.1) < 1e-12
    lrs = [lr(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_lr_schedule_gives_the_numbers_worked_out_by_hand():
    """Peak 2, 4 warm-up steps, 12 steps in all, floor ratio 0.5 (so floor 1): the cosine runs over
    steps 4..12, a span of 8. Exact where the arithmetic is exact in floats."""
    def lr(step, ratio=0.5, warmup=4):
        return lr_at(step, peak=2.0, warmup_steps=warmup, total_steps=12, floor_ratio=ratio)

    # warm-up 2 * (step + 1) / 4: the peak is reached on its last step, step 3
    assert [lr(s) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert lr(4) == 2.0                                 # progress (4 - 4) / 8 = 0: cos 0 = 1, the peak
    # progress 2/8: 1 + (2 - 1) / 2 * (1 + cos(pi/4)) = 1.5 + sqrt(2)/4
    assert lr(6) == pytest.approx(1.8535533905932737, abs=1e-15)
    assert lr(8) == 1.5                                 # progress 1/2, cos = 0: 1 + (2 - 1) / 2
    assert lr(10) == pytest.approx(1.1464466094067263, abs=1e-15)    # progress 6/8: 1.5 - sqrt(2)/4
    assert lr(12) == 1.0                                # progress 1, cos pi = -1: the floor, 2 * 0.5
    assert lr(13) == lr(1000) == 1.0                    # progress stays 1 after the end
    # floor ratio 1: the floor is the peak, so 2 from the end of the same warm-up on
    assert [lr(s, ratio=1.0) for s in range(16)] == [0.5, 1.0, 1.5] + [2.0] * 13
    # floor ratio 0 (the LoRA runs): the midpoint is 2 / 2 and the end 0
    assert lr(8, ratio=0.0) == 1.0 and lr(12, ratio=0.0) == 0.0
    # no warm-up: the cosine starts at the peak on step 0 and spans all 12 steps
    assert [lr(s, warmup=0) for s in (0, 6, 12, 13)] == [2.0, 1.5, 1.0, 1.0]


def test_fit_records_monitors_and_checkpoints_on_schedule(tmp_path):
    """The loop's bookkeeping on a one-parameter problem: loss entries every record_every steps
    and at the last, monitor entries before the first step and every monitor_every, and a resumed
    run that ends where an uninterrupted one does, with the same history."""
    def run(run_dir=None, stop_after=None):
        w = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(w.weight, 3.0)
        spec = FitSpec(steps=10, lr=0.1, warmup_steps=2, checkpoint_every=4, record_every=3, monitor_every=5)
        history = fit(w, lambda step: (w.weight * (step + 1) - 1.0).pow(2).sum(), spec, run_dir=run_dir,
                      stop_after=stop_after, monitor=lambda done: {"w": w.weight.item()}, progress=False)
        return w, history

    whole, history = run()
    assert [h["step"] for h in history if "loss" in h] == [0, 3, 6, 9]
    assert [h["step"] for h in history if "monitor" in h] == [0, 5, 10]
    assert history[0]["monitor"] == {"w": 3.0} and whole.weight.item() != 3.0

    run(tmp_path, stop_after=6)
    resumed, resumed_history = run(tmp_path)
    assert torch.equal(resumed.weight, whole.weight) and resumed_history == history


def test_a_corrupt_checkpoint_is_reported_and_training_starts_over(tmp_path):
    """A bit-flipped checkpoint is never resumed from: the loop warns, naming it, and trains from
    the start, ending where an uninterrupted run ends."""
    from cpbook.cache import CorruptCacheWarning

    def run(run_dir=None, stop_after=None):
        w = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(w.weight, 3.0)
        spec = FitSpec(steps=10, lr=0.1, checkpoint_every=4)
        fit(w, lambda step: (w.weight * (step + 1) - 1.0).pow(2).sum(), spec, run_dir=run_dir,
            stop_after=stop_after, progress=False)
        return w

    whole = run()
    run(tmp_path, stop_after=8)
    checkpoint = tmp_path / "checkpoint.safetensors"
    data = bytearray(checkpoint.read_bytes())
    data[-2] ^= 0x40                          # the last weight's bits: it would load without error
    checkpoint.write_bytes(bytes(data))
    with pytest.warns(CorruptCacheWarning, match="checkpoint.safetensors"):
        resumed = run(tmp_path)
    assert torch.equal(resumed.weight, whole.weight)
