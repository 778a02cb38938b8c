import pytest

from cpbook.params import ParameterError, notebook_values
from cpbook.synthetic.config import PRESETS, SPECS, make_config


def test_presets_are_valid_and_complete():
    for name in PRESETS:
        cfg = make_config(name)
        assert set(PRESETS[name]) == set(SPECS) - {"preset"}
        assert cfg.n_points == cfg.k_max + 1


def test_none_means_the_preset_value_and_overrides_win():
    cfg = make_config("cpu", d=None, alpha=0.25, steps=10, warmup_steps=0)
    assert cfg.d == PRESETS["cpu"]["d"] and cfg.alpha == 0.25 and cfg.steps == 10


def test_paper_preset_has_the_paper_scale():
    cfg = make_config("paper")
    assert (cfg.d, cfg.n_tasks, cfg.k_max, cfg.sigma, cfg.tau) == (20, 64, 40, 1.0, 1.0)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (12, 256, 8)


@pytest.mark.parametrize("override, words", [
    (dict(alpha=1.5), ["alpha", "[0, 1]"]),
    (dict(alpha=-0.1), ["alpha", "[0, 1]"]),
    (dict(steps=-5), ["steps", "out of range"]),
    (dict(d=0), ["'d'", "[1, 256]"]),
    (dict(d=2.5), ["'d'", "wrong type"]),
    (dict(lr="fast"), ["'lr'", "wrong type"]),
    (dict(n_embd=30, n_head=4), ["n_embd", "divisible"]),
    (dict(steps=100, warmup_steps=100), ["warmup_steps", "below"]),
])
def test_bad_values_name_the_parameter_and_its_range(override, words):
    with pytest.raises(ParameterError) as err:
        make_config("cpu", **override)
    for w in words:
        assert w in str(err.value)


def test_unknown_preset_and_unknown_parameter():
    with pytest.raises(ParameterError, match="'preset'.*'cpu', 'paper'"):
        make_config("laptop")
    with pytest.raises(ParameterError, match="unknown parameter.*'alpah'"):
        make_config("cpu", alpah=0.3)


def test_integral_floats_are_accepted_as_integers():
    assert make_config("cpu", d=3.0).d == 3


def test_notebook_values_skip_modules_functions_and_ipython_names():
    import math
    ns = {"math": math, "f": lambda: 1, "In": [], "Out": {}, "_": 3, "alpha": 0.2, "preset": "cpu"}
    assert notebook_values(ns) == {"alpha": 0.2, "preset": "cpu"}
