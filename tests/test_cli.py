"""`cpbook run` explains itself: progress and cache hits on the console (never in the notebook),
and a checkpoint where training was interrupted, from which a rerun ends bit-identical."""
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tqdm.auto import tqdm as auto_bar

from cpbook import console
from cpbook.fit import CHECKPOINT_FILE, FitSpec, fit
from cpbook.synthetic.model import InContextRegressor, ModelSize
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts


@pytest.fixture
def no_console(monkeypatch):
    monkeypatch.delenv(console.ENV, raising=False)


@pytest.fixture
def console_file(tmp_path, monkeypatch):
    path = tmp_path / "console.txt"
    monkeypatch.setenv(console.ENV, str(path))
    return path


# --- the console ----------------------------------------------------------------------------------

def test_without_the_cli_bars_are_tqdm_autos_and_nothing_is_said(no_console, capsys):
    shown, hidden = console.progress(range(2), show=True), console.progress(range(2), show=False)
    assert type(shown) is auto_bar and not shown.disable
    assert type(hidden) is auto_bar and hidden.disable
    shown.close(), hidden.close()
    capsys.readouterr()
    console.say("pretrained model: from the cache")
    assert capsys.readouterr() == ("", "")


def test_under_the_cli_bars_and_messages_go_to_the_console_file_only(console_file, capsys):
    for _ in console.progress(range(5), show=False, desc="counting"):   # hidden from a notebook only
        pass
    console.say("pretrained model: trained now, 3 s")
    text = console_file.read_text()
    assert "counting: 100%" in text and "5/5" in text
    assert text.endswith("cpbook: pretrained model: trained now, 3 s\n")
    assert capsys.readouterr() == ("", "")


def test_a_cached_artifact_says_where_it_came_from_once(console_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))

    def make(folder):
        (folder / "weights").write_text("w")
        return {}

    for _ in range(3):
        folder = console.cached("toy model", "toy", {"n": 1}, make)
    lines = console_file.read_text().splitlines()
    assert lines[0] == "cpbook: toy model: not in the cache, trained now"
    assert lines[1].startswith("cpbook: toy model: trained now, ") and lines[1].endswith(" s")
    console._from_cache.clear()   # a new process
    console.cached("toy model", "toy", {"n": 1}, make)
    assert console_file.read_text().splitlines()[2:] == [f"cpbook: toy model: from the cache ({folder})"]


def test_durations_read_as_a_person_would_say_them():
    assert [console.duration(s) for s in (42, 7 * 60, 3.5 * 3600, 16 * 86400)] == \
        ["42 s", "7 min", "3.5 h", "16 days"]

# --- an interrupted fit leaves a checkpoint to resume from ---------------------------------------

PRIOR = Prior(discrete_tasks(4, 2, 1.0, 0), 1.0, 0.5)
SPEC = FitSpec(steps=30, lr=3e-3, warmup_steps=5, checkpoint_every=7, record_every=3, monitor_every=5)


def tiny_fit(run_dir=None, interrupt_at=None, ctrl_c_at=None, monitor_interrupt_at=None):
    """A real model trained for SPEC; at step `interrupt_at` loss_fn raises KeyboardInterrupt, at
    `ctrl_c_at` it sends this process a SIGINT, and the monitor raises after `monitor_interrupt_at`
    steps (when the optimizer has moved the weights)."""
    torch.manual_seed(0)
    model = InContextRegressor(2, 6, ModelSize(2, 32, 2))

    def loss_fn(step):
        if step == interrupt_at:
            raise KeyboardInterrupt
        if step == ctrl_c_at:
            os.kill(os.getpid(), signal.SIGINT)
        batch = sample_prompts(PRIOR, 16, 6, 0.5, 1, "train", step)
        return ((model(batch.xs, batch.ys) - batch.ys) ** 2).mean()

    def monitor(done):
        if done == monitor_interrupt_at:
            raise KeyboardInterrupt
        return {"sum": float(sum(p.detach().sum() for p in model.parameters()))}

    history = fit(model, loss_fn, SPEC, run_dir=run_dir, monitor=monitor, progress=False)
    return model, history


def checkpoint_step(folder: Path) -> int:
    with safe_open(str(folder / CHECKPOINT_FILE), framework="pt") as f:
        return int(f.metadata()["step"])


@pytest.fixture(scope="module")
def uninterrupted():
    return tiny_fit()


@pytest.mark.parametrize("how, saved_at", [
    ({"interrupt_at": 17}, 17),          # in loss_fn: steps 0..16 are done
    ({"ctrl_c_at": 17}, 18),             # a real Ctrl-C waits for step 17 to finish
    ({"monitor_interrupt_at": 20}, 14),  # after the optimizer moved: the last regular checkpoint
])
def test_an_interrupted_fit_resumes_to_the_same_weights(tmp_path, console_file, uninterrupted, how, saved_at):
    with pytest.raises(KeyboardInterrupt):
        tiny_fit(tmp_path, **how)
    assert checkpoint_step(tmp_path) == saved_at
    assert console_file.read_text().endswith(f"interrupted {'mid-step' if saved_at == 14 else f'after {saved_at} of 30 steps'}; "
                                             f"a rerun resumes from the checkpoint at step {saved_at}\n")
    resumed, history = tiny_fit(tmp_path)
    assert f"resuming from the checkpoint at step {saved_at} of 30" in console_file.read_text()
    for (name, a), b in zip(uninterrupted[0].state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert history == uninterrupted[1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupted_fit_without_a_run_dir_says_it_keeps_nothing(console_file):
    with pytest.raises(KeyboardInterrupt):
        tiny_fit(interrupt_at=3)
    assert console_file.read_text().endswith("training: interrupted after 3 of 30 steps; this run keeps no checkpoint\n")
