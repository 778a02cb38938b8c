import torch

from cpbook.synthetic.model import InContextRegressor, ModelSize
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts
from cpbook.synthetic.train import TrainSpec, lr_at, train

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
    gets well below that (at initialisation it is above it)."""
    p = sample_prompts(prior(), 512, K, 0.5, 99, "held-out")
    predict_zero = (p.ys**2).mean().item()
    model = fresh_model()
    before = held_out_loss(model)
    train(model, prior(), TrainSpec(steps=200, lr=3e-3, batch_size=32, sigma=0.5, data_seed=1,
                                    warmup_steps=10), progress=False)
    after = held_out_loss(model)
    assert before > predict_zero and after < 0.85 * predict_zero, (before, after, predict_zero)


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
    spec = TrainSpec(steps=100, lr=1.0, batch_size=1, sigma=1.0, data_seed=0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, spec) == 0.1 and lr_at(9, spec) == 1.0
    assert lr_at(10, spec) == 1.0
    assert abs(lr_at(100, spec) - 0.1) < 1e-12
    lrs = [lr_at(s, spec) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
