"""The batched Bayes predictors run on the training device: every tensor they make follows the
device of their inputs, and the results come back where the prompts were. Without a GPU, the
meta device shows it: a tensor made on the CPU inside would meet a meta tensor and raise."""
import dataclasses

import torch

from cpbook.synthetic.bayes import bayes_predictions, discrete_posterior, ridge_weights
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts

TASKS = discrete_tasks(4, 3, 1.0, 0)
PROMPTS = sample_prompts(Prior(TASKS, 1.0, 0.5), 300, 7, 0.5, 0, "device")   # > CHUNK: two blocks


def test_on_the_meta_device_nothing_is_made_on_the_cpu():
    xs, ys, tasks = (t.to("meta") for t in (PROMPTS.xs, PROMPTS.ys, TASKS))
    out = bayes_predictions(xs, ys, tasks, 0.5, 1.0, 0.5, device="meta")
    for field in dataclasses.fields(out):
        value = getattr(out, field.name)
        assert value.device.type == "meta" and value.shape == (300, 7)
    assert ridge_weights(xs, ys, 0.5, 1.0).shape == (300, 7, 3)
    assert discrete_posterior(xs, ys, tasks, 0.5).shape == (300, 7, 4)


def test_the_results_come_back_to_the_prompts_device_unchanged():
    default = bayes_predictions(PROMPTS.xs, PROMPTS.ys, TASKS, 0.5, 1.0, 0.5)
    on_cpu = bayes_predictions(PROMPTS.xs, PROMPTS.ys, TASKS, 0.5, 1.0, 0.5, device="cpu")
    for field in dataclasses.fields(default):
        assert getattr(default, field.name).device == PROMPTS.xs.device
        assert torch.equal(getattr(default, field.name), getattr(on_cpu, field.name))
