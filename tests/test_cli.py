"""`cpbook run` explains itself: progress and cache hits on the console (never in the notebook),
one message for a failed or interrupted run, a warning before a long run without a GPU, and a
checkpoint where training was interrupted, from which a rerun ends bit-identical."""
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import torch
from safetensors import safe_open
from tqdm.auto import tqdm as auto_bar

from cpbook import cache, cli, console, estimate, execute
from cpbook.fit import CHECKPOINT_FILE, FitSpec, fit
from cpbook.synthetic.config import make_config
from cpbook.synthetic.model import InContextRegressor, ModelSize
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own SIGINT handler, as in a terminal: a test run started in the background (CI,
    nohup, `make test &`) begins with SIGINT ignored, and then no Ctrl-C would reach anything."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture
def no_console(monkeypatch):
    monkeypatch.delenv(console.ENV, raising=False)


@pytest.fixture
def console_file(tmp_path, monkeypatch):
    path = tmp_path / "console.txt"
    monkeypatch.setenv(console.ENV, str(path))
    return path


@pytest.fixture(autouse=True)
def keep_excepthook(monkeypatch):
    """run_chapter installs execute.hide_traceback for the `cpbook` process; tests put back pytest's."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


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


def test_each_writer_starts_a_new_line_where_another_left_a_bar():
    out = io.StringIO()
    terminal = execute.Terminal(out)
    terminal.write("\rExecuting: 5%", "papermill")
    terminal.write("\rExecuting: 9%", "papermill")          # a bar redraws its own line
    terminal.write("cpbook: pretrained model: from the cache\n", "kernel")
    terminal.write("\rtraining: 50%", "kernel")
    terminal.write("\rExecuting: 14%", "papermill")
    assert out.getvalue() == ("\rExecuting: 5%\rExecuting: 9%\ncpbook: pretrained model: from the cache\n"
                              "\rtraining: 50%\n\rExecuting: 14%")


def test_the_kernel_console_is_shown_as_it_grows_and_the_environment_restored(no_console):
    out = io.StringIO()
    with execute.kernel_console(execute.Terminal(out), every_s=0.05) as path:
        assert os.environ[console.ENV] == str(path)
        with open(path, "a", encoding="utf-8") as f:
            f.write("\rtraining: 1/2 █")
            f.flush()
            deadline = time.time() + 10
            while "1/2" not in out.getvalue() and time.time() < deadline:
                time.sleep(0.05)
            assert "1/2 █" in out.getvalue()                   # shown while the block runs
            f.write("\rtraining: 2/2 █\ncpbook: done\n")       # the last words, just before the end
    assert out.getvalue() == "\rtraining: 1/2 █\rtraining: 2/2 █\ncpbook: done\n"
    assert console.ENV not in os.environ and not path.exists()


# --- a chapter in a real kernel ----------------------------------------------------------------------

def tiny_notebook(folder: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    path = folder / "99_tiny.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_run_shows_the_kernels_progress_on_the_terminal_and_none_in_the_notebook(
        tmp_path, monkeypatch, no_console, capsys):
    monkeypatch.chdir(tmp_path)
    path = tiny_notebook(tmp_path, "from cpbook import console\n"
                                   "for _ in console.progress(range(n), show=False, desc='counting'):\n"
                                   "    pass\n"
                                   "console.say(f'counted to {n}')")
    execute.run_chapter(path, {"n": 4}, tmp_path / "out.ipynb")
    err = capsys.readouterr().err
    assert "Executing" in err and "counting: 100%" in err and "4/4" in err and "cpbook: counted to 4\n" in err
    nb = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert nb.cells[-1].outputs == [] and nb.cells[-1].execution_count is not None
    assert console.ENV not in os.environ


def test_ctrl_c_stops_the_running_cell_in_the_kernel_with_one_message(tmp_path, monkeypatch, no_console, capsys):
    """A real SIGINT to this process while a cell runs: it is passed to the kernel, the cell stops,
    the next one never runs, and the run ends in one line and a KeyboardInterrupt."""
    monkeypatch.chdir(tmp_path)
    started = tmp_path / "started"
    path = tiny_notebook(tmp_path, f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
                                   "time.sleep(120)",
                         "print('never')")

    def press_ctrl_c():
        deadline = time.time() + 120
        while not started.exists() and time.time() < deadline:
            time.sleep(0.1)
        if started.exists():
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    begun = time.time()
    with pytest.raises(KeyboardInterrupt) as err:
        execute.run_chapter(path, {}, tmp_path / "out.ipynb")
    assert time.time() - begun < 100                       # not the 120 s the cell would sleep
    assert err.value.cpbook_explained
    lines = capsys.readouterr().err.splitlines()
    assert "cpbook: 99_tiny interrupted in cell [2]; the partial notebook is runs/99_tiny.failed.ipynb; " \
           "the same command again resumes from the last checkpoint" in lines
    assert not any("Traceback" in line for line in lines)
    failed = nbformat.read(str(tmp_path / "runs/99_tiny.failed.ipynb"), as_version=4)
    assert failed.cells[-1].execution_count is None and not (tmp_path / "out.ipynb").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- the one message -----------------------------------------------------------------------------

def fail_in_cell(cell: int, ename: str, evalue: str):
    def execute(*args, **kwargs):
        Path(args[1]).write_text("{}")                    # papermill's partial notebook
        raise pm.PapermillExecutionError(cell, cell, "source", ename, evalue, ["Traceback ..."])
    return execute


@pytest.fixture
def quick_estimate(monkeypatch, tmp_path):
    """An empty cache, and a matmul peak of 100 GFLOP/s without measuring it."""
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(estimate, "quick_peak", lambda: 100.0)


def test_a_failed_cell_ends_in_one_message(tmp_path, monkeypatch, capsys, quick_estimate):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pm, "execute_notebook", fail_in_cell(7, "ValueError", "the tasks are not sorted"))
    with pytest.raises(pm.PapermillExecutionError) as err:
        cli.main(["run", "01", "-p", "alpha", "0.3", "-o", str(tmp_path / "out.ipynb")])
    assert err.value.cpbook_explained
    lines = capsys.readouterr().err.splitlines()
    assert lines[-2:] == ["cpbook: 01_pretraining failed in cell [7]: ValueError: the tasks are not sorted",
                          f"cpbook: the full traceback is in runs/01_pretraining.failed.ipynb "
                          f"({tmp_path / 'out.ipynb'} was not written)"]
    assert (tmp_path / "runs/01_pretraining.failed.ipynb").exists()


@pytest.mark.parametrize("ename, status", [("ValueError", 1), ("KeyboardInterrupt", -signal.SIGINT)])
def test_the_cpbook_command_shows_no_traceback(tmp_path, ename, status):
    """The `cpbook` script (`sys.exit(main())`), with a kernel that fails or is interrupted."""
    script = (f"import sys, papermill as pm\nfrom pathlib import Path\n"
              f"def fail(*args, **kwargs):\n"
              f"    Path(args[1]).write_text('{{}}')\n"
              f"    raise pm.PapermillExecutionError(4, 4, 'source', {ename!r}, 'boom', ['Traceback ...'])\n"
              f"pm.execute_notebook = fail\n"
              f"from cpbook.cli import main\n"
              f"sys.exit(main(['run', '01', '-p', 'alpha', '0.3', '--yes']))\n")
    env = {**os.environ, "CPBOOK_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    assert "01_pretraining failed in cell [4]: ValueError: boom" in done.stderr if ename == "ValueError" else \
        "01_pretraining interrupted in cell [4]" in done.stderr


def test_the_hook_hides_only_what_was_explained(capsys):
    explained, other = ValueError("explained"), ValueError("not explained")
    explained.cpbook_explained = True
    execute.hide_traceback(ValueError, explained, None)
    execute.hide_traceback(ValueError, other, None)
    assert capsys.readouterr().err == "ValueError: not explained\n"


def test_cpbook_list_into_a_closed_pipe_is_quiet():
    """`cpbook list | head -1`: the reader is gone before the list is written."""
    proc = subprocess.Popen([sys.executable, "-m", "cpbook.cli", "list"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and err == b""


# --- before the kernel starts ---------------------------------------------------------------------

def test_the_estimate_is_the_models_flops_over_the_measured_peak(quick_estimate):
    plan = estimate.training_plan("02_forgetting", {"preset": "paper"})
    cfg = make_config("paper")
    per_prompt = InContextRegressor(cfg.d, cfg.n_points, ModelSize(12, 256, 8)).flops_per_prompt()
    assert plan == {"pretrained model (500000 steps)": (500_000, 3 * 64 * per_prompt),
                    "fine-tuned model (400 steps at lr 0.0001)": (400, 3 * 64 * per_prompt)}
    assert estimate.training_seconds(plan, 1e11, 0.5) == 500_400 * 3 * 64 * per_prompt / 5e10
    assert estimate.training_plan("05_icl_vs_instructions", {}) == {}


def test_a_model_in_the_cache_is_not_counted(quick_estimate):
    cfg = make_config("cpu")
    entry = cache.entry_path("pretrain", cfg.pretrain_key())
    assert list(estimate.training_plan("01_pretraining", {})) == [f"pretrained model ({cfg.steps} steps)"]
    entry.mkdir(parents=True)
    (entry / cache.ENTRY_FILE).write_text("{}")
    assert estimate.training_plan("01_pretraining", {}) == {}


def test_the_paper_preset_on_a_cpu_asks_first(monkeypatch, capsys, quick_estimate):
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    monkeypatch.setattr(estimate, "default_device", lambda: torch.device("cpu"))
    with pytest.raises(SystemExit, match="not started .*--yes"):
        cli.main(["run", "01", "-p", "preset", "paper"])       # not a terminal: nobody to ask
    err = capsys.readouterr().err
    assert "cpbook: not in the cache, so trained now: pretrained model (500000 steps)\n" in err
    mfu = estimate.stored_mfu()       # the stored benchmark's, whatever machine made it
    assert f"days of training on this machine (no GPU; {mfu:.0%} of the 100 GFLOP/s matmul peak" in err
    assert "the 'paper' preset is meant for a GPU" in err

    monkeypatch.setattr(estimate, "confirm", lambda question: True)   # someone said yes on the terminal
    estimate.check_training_time("01_pretraining", {"preset": "paper"}, yes=False, limit_s=cli.LONG_RUN_S)
    estimate.check_training_time("01_pretraining", {"preset": "paper"}, yes=True, limit_s=cli.LONG_RUN_S)


def test_a_short_run_or_a_gpu_starts_without_asking(monkeypatch, capsys, quick_estimate):
    monkeypatch.setattr(estimate, "confirm", lambda question: pytest.fail("asked"))
    monkeypatch.setattr(estimate, "default_device", lambda: torch.device("cpu"))
    estimate.check_training_time("01_pretraining", {"steps": 300, "warmup_steps": 10}, yes=False, limit_s=cli.LONG_RUN_S)
    assert "of training on this machine" in capsys.readouterr().err
    monkeypatch.setattr(estimate, "default_device", lambda: torch.device("cuda"))
    estimate.check_training_time("01_pretraining", {"preset": "paper"}, yes=False, limit_s=cli.LONG_RUN_S)
    assert capsys.readouterr().err == ""


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
