"""Fuzzed parameters: whatever a user passes to a chapter (`cpbook run -p NAME VALUE`, papermill's
-p, or an edited parameters cell), the answer is a valid configuration or the parameter error
naming the parameter, before any work, never a traceback from torch, pandas or numpy.

Hypothesis throws random values at every chapter: each declared parameter gets values of every
type (huge and negative integers, NaN and infinities, strings, lists, None), sometimes an
unknown name comes along, and the command line gets random text. At least 500 examples per
chapter."""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpbook import chapters, cli, execute
from cpbook.params import ParameterError

STEMS = list(chapters.CHAPTERS)
EXAMPLES = 500

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2**70, 2**70), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10),
    st.text(max_size=12), st.sampled_from(["cpu", "paper", "en", "fr", "gemma-3-270m", "1e-3", ""]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))


def plausible(spec):
    """Values near the valid range, so a good share of the examples pass the checks."""
    kind = spec.item or spec.kind
    if spec.choices:
        one = st.sampled_from(list(spec.choices))
    elif kind is int:
        one = st.integers(int(spec.low if spec.low is not None else -10) - 2,
                          int(min(spec.high if spec.high is not None else 10, 10**6)) + 2)
    elif kind is float:
        lo = spec.low if spec.low is not None else -10.0
        hi = spec.high if spec.high is not None else 10.0
        one = st.floats(lo - abs(lo) - 1, hi + abs(hi) + 1)
    elif kind is bool:
        one = st.booleans()
    else:
        one = st.sampled_from(["en", "fr", "pig_latin", "gemma-3-270m", "smollm2-135m-instruct", "xx"])
    return st.lists(one, min_size=0, max_size=4) if spec.item else one


def overrides(stem):
    specs = chapters.parameter_specs(stem)
    some = st.dictionaries(st.sampled_from(list(specs)), values, max_size=3)
    near = st.fixed_dictionaries({}, optional={name: plausible(spec) for name, spec in specs.items()})
    unknown = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda n: n not in specs), values, max_size=1)
    return st.tuples(st.one_of(some, near), st.one_of(st.just({}), unknown)).map(lambda t: {**t[0], **t[1]})


def explained(err: Exception, given: dict) -> bool:
    """The error is ours and names a parameter that was given, or (for a stored prompt set or a
    model) the value that was given."""
    text = str(err)
    return any(f"'{name}'" in text or repr(name) in text for name in given) or any(
        isinstance(v, str) and v and repr(v) in text for v in given.values())


def check(stem, given):
    try:
        chapters.check_values(stem, given)
    except (ParameterError, ValueError, FileNotFoundError) as err:
        assert type(err).__module__.startswith(("cpbook", "builtins")), repr(err)
        assert explained(err, given), f"{stem} {given!r}: the error names no parameter: {err}"
        return False
    # accepted: every value has the declared type and lies in its range
    specs = chapters.parameter_specs(stem)
    for name, value in given.items():
        assert specs[name].check(value) is not None or specs[name].optional
        for v in value if isinstance(value, list) else [value]:
            assert not (isinstance(v, float) and math.isnan(v)), f"{stem}: {name} = NaN was accepted"
    return True


@pytest.mark.parametrize("stem", STEMS)
def test_random_parameters_give_a_configuration_or_a_named_error(stem):
    outcomes = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(overrides(stem))
    def run(given):
        outcomes.append(check(stem, given))

    run()
    assert len(outcomes) >= EXAMPLES
    assert any(outcomes) and not all(outcomes), "the fuzzer should find both valid and invalid inputs"


@pytest.mark.parametrize("stem", STEMS)
def test_the_command_line_refuses_bad_text_before_a_kernel_starts(stem, monkeypatch, tmp_path):
    """`cpbook run` with random -p text: a SystemExit naming the parameter, or (for a valid
    configuration) the notebook handed to papermill, which is stubbed out here."""
    started = []
    monkeypatch.setattr(execute.pm, "execute_notebook", lambda *a, **k: started.append(k["parameters"]) or (_ for _ in ()).throw(KeyboardInterrupt))
    names = list(chapters.parameter_specs(stem))

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(st.sampled_from(names + ["alpah"]), st.one_of(st.text(max_size=10), st.integers().map(str),
                                                         st.floats().map(str), st.lists(st.integers(-5, 20)).map(str)))
    def run(name, text):
        try:
            # --yes: a valid configuration that trains for long starts without asking (stubbed here)
            cli.main(["run", stem, "--yes", "-p", name, text, "-o", str(tmp_path / "out.ipynb")])
        except SystemExit as exit:
            if exit.code == 2 and text.startswith("-"):
                return                 # argparse took the value for an option and printed its usage
            message = str(exit.code)
            assert message.startswith(f"cpbook: {stem}:") and (repr(name) in message or f"'{name}'" in message
                                                               or repr(cli.parse_value(text)) in message), message
        except KeyboardInterrupt:      # the stub: the checks passed and papermill would have started
            assert started[-1] == {name: cli.parse_value(text)}

    run()


@pytest.mark.parametrize("stem", STEMS)
def test_not_a_number_is_refused_for_every_float_parameter(stem):
    floats = [n for n, s in chapters.parameter_specs(stem).items() if (s.item or s.kind) is float]
    for name in floats:
        spec = chapters.parameter_specs(stem)[name]
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ParameterError, match=f"'{name}'"):
                chapters.check_values(stem, {name: [bad] if spec.item else bad})
