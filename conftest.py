"""How `make test` shares the work between its two workers (pytest-xdist, `-n 2` in pytest.ini).

The chapters and checks that need the `cpu` preset's pretrained model form one lane, run in this
order on one worker: chapter 1 trains the model (about half of the whole run), the others read it
from the cache. Every other test module, and every other notebook, is a unit of its own that the
other worker takes as it frees up. A notebook is never split: its cells run in order in one kernel.
"""
import pytest

MODEL_LANE = "the cpu preset's pretrained model"
MODEL_CHAPTERS = ("book/01_pretraining.ipynb", "book/02_forgetting.ipynb", "book/03_task_inference.ipynb",
                  "book/04_conjugate_prompting.ipynb", "book/08_dose_and_languages.ipynb")
MODEL_TESTS = ("tests/test_dose.py::test_the_stored_grid_is_the_chapters_and_a_random_dose_recomputes",
               "tests/test_variants.py::test_the_stored_variants_are_the_chapters_and_a_random_one_recomputes")


def unit(nodeid: str) -> str:
    """The unit of work a test belongs to: the model's lane, or its notebook or test module."""
    where = nodeid.split("::", 1)[0]
    if where in MODEL_CHAPTERS or nodeid in MODEL_TESTS:
        return MODEL_LANE
    return where


def _order(nodeid: str) -> int:
    """In the model's lane: chapter 1 first (it trains the model), then the checks that reread
    it, then the chapters after it in the book's order."""
    where = nodeid.split("::", 1)[0]
    return 0 if where == MODEL_CHAPTERS[0] else 1 if nodeid in MODEL_TESTS else 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # the model's lane first, so that a worker starts on it at once (a stable sort: each
    # notebook's cells keep their order)
    lane = sorted((i for i in items if unit(i.nodeid) == MODEL_LANE), key=lambda i: _order(i.nodeid))
    items[:] = lane + [i for i in items if unit(i.nodeid) != MODEL_LANE]


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        """Units of work as `unit` names them, handed out in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    config.option.loadscopereorder = False   # keep the collection order: the model's lane first
    return Lanes(config, log)
