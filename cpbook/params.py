"""Parameters: declared once, as dataclass fields, with their type, range and description.

    @dataclass(frozen=True)
    class TuneConfig:
        lr: float = param("peak learning rate", 1e-7, 1.0, default=1e-4)

`specs(TuneConfig)` reads the declarations back as `Param`s, and everything else derives from
them: validation (`check_all`, `validate`), `cpbook list`, the command-line options of the
runners, and the typed `parameters` cells of the chapters (`parameters_cell`), which papermill's
`--help-notebook` reads. A chapter's `parameters` cell assigns plain values (papermill may
override them); the next cell hands them to the library, which rejects names it does not know (a
typo in `-p alpah 0.3` must not silently run the default) and values out of range, with a message
that names the parameter and what it allows, before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass


class ParameterError(ValueError):
    """A chapter parameter is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type                     # int, float, str, bool, or a list of int, float or str
    doc: str
    low: float | None = None       # inclusive bounds (of each item, for a list), None for unbounded
    high: float | None = None
    choices: tuple | None = None
    optional: bool = False         # None allowed (meaning "take it from the preset")

    @property
    def item(self) -> type | None:
        """The item type of a list parameter (None for a scalar one)."""
        return typing.get_args(self.kind)[0] if typing.get_origin(self.kind) is list else None

    @property
    def type_name(self) -> str:
        """The type as Python writes it: 'int', 'list[float]', 'Optional[int]'."""
        name = f"list[{self.item.__name__}]" if self.item else self.kind.__name__
        return f"Optional[{name}]" if self.optional else name

    def allowed(self) -> str:
        if self.item is not None:
            return "a non-empty list, each item " + Param(self.name, self.item, self.doc, self.low, self.high,
                                                          self.choices).allowed()
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is str:
            return "a string"
        if self.kind is bool:
            return "True or False"
        def show(bound):   # integers in full (a seed's bound is 4294967295, not 4.29497e+09)
            return str(int(bound)) if self.kind is int else f"{bound:g}"
        lo = "-inf" if self.low is None else show(self.low)
        hi = "inf" if self.high is None else show(self.high)
        kind = "an integer" if self.kind is int else "a number"
        return f"{kind} in [{lo}, {hi}]"

    def check(self, value):
        """The value converted to `kind`, or ParameterError naming this parameter."""
        if value is None:
            if self.optional:
                return None
            raise ParameterError(f"parameter '{self.name}' must be set: {self.allowed()} ({self.doc})")
        if self.item is not None:
            if not isinstance(value, (list, tuple)) or not value:
                raise ParameterError(f"parameter '{self.name}' = {value!r} has the wrong type: "
                                     f"it must be {self.allowed()} ({self.doc})")
            each = Param(self.name, self.item, self.doc, self.low, self.high, self.choices)
            return [each.check(v) for v in value]
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
        if self.kind is float and not math.isfinite(value):
            raise ParameterError(f"parameter '{self.name}' = {value!r} is not a finite number: "
                                 f"it must be {self.allowed()} ({self.doc})")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter '{self.name}' = {value!r} is not allowed: "
                                 f"it must be {self.allowed()} ({self.doc})")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ParameterError(f"parameter '{self.name}' = {value!r} is out of range: "
                                 f"it must be {self.allowed()} ({self.doc})")
        return value


# --- declaring parameters as dataclass fields -------------------------------------------------

KINDS = (int, float, str, bool, list[int], list[float], list[str])


def param(doc: str, low: float | None = None, high: float | None = None, choices: tuple | None = None,
          default=dataclasses.MISSING):
    """A dataclass field that is also a declared parameter (its type is the field's annotation).
    A list default is given to the dataclass as a factory, so instances never share it."""
    meta = {"param": dict(doc=doc, low=low, high=high, choices=choices)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def param_like(spec: Param, default=dataclasses.MISSING):
    """A dataclass field declared by an existing Param (one declaration, used in two places)."""
    return param(spec.doc, spec.low, spec.high, spec.choices, default=default)


def specs(cls, optional: bool = False) -> dict[str, Param]:
    """The parameters a dataclass declares with `param`, in field order. With optional=True each
    also accepts None (a chapter's "take it from the preset")."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if "param" in f.metadata:
            if hints[f.name] not in KINDS:
                raise TypeError(f"{cls.__name__}.{f.name}: a parameter's type must be one of {KINDS}, "
                                f"not {hints[f.name]}")
            out[f.name] = Param(f.name, hints[f.name], optional=optional, **f.metadata["param"])
    return out


def add_options(parser, cls) -> None:
    """One command-line option per declared parameter of `cls` (--batch-size for batch_size),
    with its type, its default and what it allows in the help."""
    for name, spec in specs(cls).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=spec.kind, default=getattr(cls, name),
                            help=f"{spec.doc}; {spec.allowed()} (default: %(default)s)")


def one_of(value, allowed, what: str):
    """`value` if it is among `allowed`, else ValueError naming it (cut short: a pasted value can
    be huge) and what is allowed: "unknown language 'sw'; available: en, fr"."""
    if value not in allowed:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ValueError(f"unknown {what} {shown}; available: {', '.join(map(str, allowed))}")
    return value


def named(parameter: str, check, value):
    """check(value), with a ValueError turned into a ParameterError naming the parameter."""
    try:
        return check(value)
    except ValueError as err:
        raise ParameterError(f"parameter '{parameter}' = {value!r}: {err}") from None


def validate(obj):
    """Check every declared parameter of a dataclass instance; returns it unchanged."""
    for name, spec in specs(type(obj)).items():
        spec.check(getattr(obj, name))
    return obj


def defaults(cls) -> dict:
    """The declared parameters of a dataclass that have a default value, with that value."""
    out = {}
    for f in dataclasses.fields(cls):
        if "param" in f.metadata and f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif "param" in f.metadata and f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


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
