"""Parameters are declared once; validation, the CLI and the chapters' parameters cells derive from it."""
from dataclasses import dataclass

import pytest

from cpbook.params import Param, ParameterError, defaults, param, param_like, specs, validate


@dataclass(frozen=True)
class Example:
    steps: int = param("optimizer steps", 1, 100, default=10)
    lr: float = param("peak learning rate", 1e-6, 1.0, default=1e-3)
    mode: str = param("how", choices=("a", "b"), default="a")
    scales: list[float] = param("label scales", 0.5, 4.0, default=[1.0, 2.0])
    names: list[str] = param("model names", default=["x"])
    plain: int = 3                      # not a parameter


def test_specs_read_the_declarations_back_in_field_order():
    s = specs(Example)
    assert list(s) == ["steps", "lr", "mode", "scales", "names"]
    assert s["steps"] == Param("steps", int, "optimizer steps", 1, 100)
    assert s["scales"].item is float and s["names"].item is str
    assert s["steps"].type_name == "int" and s["scales"].type_name == "list[float]"
    assert specs(Example, optional=True)["lr"].type_name == "Optional[float]"
    assert defaults(Example) == {"steps": 10, "lr": 1e-3, "mode": "a", "scales": [1.0, 2.0], "names": ["x"]}


def test_list_defaults_are_not_shared_between_instances():
    a, b = Example(), Example()
    a.scales.append(3.0)
    assert b.scales == [1.0, 2.0]


@pytest.mark.parametrize("field, value, words", [
    ("steps", 0, ["'steps'", "out of range", "[1, 100]"]),
    ("steps", 2.5, ["'steps'", "wrong type"]),
    ("steps", True, ["'steps'", "wrong type"]),
    ("lr", "fast", ["'lr'", "wrong type"]),
    ("mode", "c", ["'mode'", "not allowed", "'a', 'b'"]),
    ("scales", [1.0, 5.0], ["'scales'", "out of range"]),
    ("scales", [], ["'scales'", "non-empty list"]),
    ("scales", 2.0, ["'scales'", "wrong type"]),
    ("names", ["x", 3], ["'names'", "wrong type"]),
])
def test_validate_names_the_parameter_and_what_it_allows(field, value, words):
    with pytest.raises(ParameterError) as err:
        validate(Example(**{field: value}))
    for w in words:
        assert w in str(err.value)


def test_a_field_can_reuse_a_declaration_made_elsewhere():
    declared = Param("seed", int, "seed of the draws", 0, 9)

    @dataclass(frozen=True)
    class Run:
        seed: int = param_like(declared, default=0)

    assert specs(Run)["seed"] == declared
    with pytest.raises(ParameterError, match="'seed'.*out of range"):
        validate(Run(seed=10))


def test_an_unsupported_type_is_refused_at_declaration():
    @dataclass(frozen=True)
    class Bad:
        shape: tuple = param("a shape", default=(1,))

    with pytest.raises(TypeError, match="shape"):
        specs(Bad)
