"""Chapter parameters: declared once with their allowed ranges, checked before any work starts.

A chapter's `parameters` cell assigns plain values (papermill may override them). The next cell
hands the notebook's namespace to `collect`, which rejects names it does not know (a typo in
`-p alpah 0.3` must not silently run the default) and values out of range, with a message that
names the parameter and what it allows.
"""
from __future__ import annotations

import types
from dataclasses import dataclass


class ParameterError(ValueError):
    """A chapter parameter is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type                     # int, float or str
    doc: str
    low: float | None = None       # inclusive bounds, None for unbounded
    high: float | None = None
    choices: tuple | None = None
    optional: bool = False         # None allowed (meaning "take it from the preset")

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        kind = "an integer" if self.kind is int else "a number"
        return f"{kind} in [{lo}, {hi}]"

    def check(self, value):
        """The value converted to `kind`, or ParameterError naming this parameter."""
        if value is None:
            if self.optional:
                return None
            raise ParameterError(f"parameter '{self.name}' must be set: {self.allowed()} ({self.doc})")
        if self.kind is list:            # a list of numbers, each within [low, high]
            if not isinstance(value, (list, tuple)) or not value:
                raise ParameterError(f"parameter '{self.name}' = {value!r} must be a non-empty list of numbers "
                                     f"in [{self.low:g}, {self.high:g}] ({self.doc})")
            return [Param(self.name, float, self.doc, self.low, self.high).check(v) for v in value]
        if self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) or (
                isinstance(value, float) and value.is_integer())
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            raise ParameterError(f"parameter '{self.name}' = {value!r} has the wrong type: "
                                 f"it must be {self.allowed()} ({self.doc})")
        value = self.kind(value)
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter '{self.name}' = {value!r} is not allowed: "
                                 f"it must be {self.allowed()} ({self.doc})")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ParameterError(f"parameter '{self.name}' = {value!r} is out of range: "
                                 f"it must be {self.allowed()} ({self.doc})")
        return value


# Names IPython puts in a notebook's namespace; they are not chapter parameters.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook_values(namespace: dict) -> dict:
    """The plain values a notebook has assigned so far (parameters), skipping modules,
    functions, classes and IPython's own names."""
    return {
        name: value for name, value in namespace.items()
        if not name.startswith("_") and name not in _IPYTHON_NAMES
        and not isinstance(value, (types.ModuleType, type)) and not callable(value)
    }


def check_all(specs: dict[str, Param], values: dict) -> dict:
    """Check every value against its spec; unknown names are an error listing the known ones."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
                             f"this chapter takes: {', '.join(specs)}")
    return {name: specs[name].check(value) for name, value in values.items()}
