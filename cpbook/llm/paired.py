"""Rates and paired differences per language, for chapters 6 and 7.

Both chapters compare two models (a base and its tuned sibling) on the same items in several
surface forms, and then compare the change across surfaces. Conventions, as in chapter 5:
- a rate (accuracy, refusal rate) carries its Wilson interval;
- a change between models is paired by item: per item d = x(a) - x(b), and its interval is
  mean(d) +- z se(d);
- the language question compares changes, paired by item across surfaces: per item,
  d(reference) - d(surface).
Default level 95% (figures and tables); assert cells ask for 99% (`cpbook.stats.LEVEL_ASSERTS`).
"""
from __future__ import annotations

import pandas as pd

from cpbook.stats import LEVEL_FIGURES, mean_interval, pivot_unique, require_unique, wilson_interval


def rate_table(results: dict[str, pd.DataFrame], value: str, group: str,
               level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per model and group (language or surface): n, the rate of the boolean column `value`, and
    its Wilson interval (low, high)."""
    rows = []
    for model, df in results.items():
        for g, part in df.groupby(group, sort=False):
            k, n = int(part[value].sum()), len(part)
            iv = wilson_interval(k, n, level)
            rows.append({"model": model, group: g, "n": n, "rate": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)


def paired(a: pd.DataFrame, b: pd.DataFrame, value: str, group: str, key: str = "id") -> pd.DataFrame:
    """Rows of two models matched by (group, key), with d = value(a) - value(b)."""
    cols = [group, key]
    for df in (a, b):
        require_unique(df, cols)
    both = a[cols + [value]].merge(b[cols + [value]], on=cols, suffixes=("_a", "_b"), validate="one_to_one")
    if len(both) != len(a) or len(both) != len(b):
        raise ValueError("the two models were not scored on the same items")
    both["d"] = both[f"{value}_a"].astype(float) - both[f"{value}_b"].astype(float)
    return both


def difference_table(a: pd.DataFrame, b: pd.DataFrame, value: str, group: str, key: str = "id",
                     level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per group: the mean of value under a and under b, and mean(a - b) with its paired interval."""
    both = paired(a, b, value, group, key)
    rows = []
    for g, part in both.groupby(group, sort=False):
        iv = mean_interval(part["d"], level)
        rows.append({group: g, "n": len(part), "a": part[f"{value}_a"].astype(float).mean(),
                     "b": part[f"{value}_b"].astype(float).mean(),
                     "difference": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)


def gap_vs_reference(a: pd.DataFrame, b: pd.DataFrame, value: str, group: str, reference: str,
                     key: str = "id", level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """Per group g other than `reference`: mean over items of d(reference) - d(g), where
    d = value(a) - value(b), paired by item (the same item in both groups)."""
    both = paired(a, b, value, group, key)
    wide = pivot_unique(both, index=key, columns=group, values="d")
    if reference not in wide:
        raise ValueError(f"reference {reference!r} was not scored; scored: {', '.join(wide.columns)}")
    rows = []
    for g in both[group].unique():
        if g == reference:
            continue
        iv = mean_interval((wide[reference] - wide[g]).dropna(), level)
        rows.append({group: g, "difference": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)


def gap_within(df: pd.DataFrame, value: str, group: str, reference: str, key: str = "id",
               level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """One model: per group g other than `reference`, the mean over items of
    value(reference) - value(g), paired by item."""
    wide = pivot_unique(df, index=key, columns=group, values=value).astype(float)
    if reference not in wide:
        raise ValueError(f"reference {reference!r} was not scored; scored: {', '.join(wide.columns)}")
    rows = []
    for g in df[group].unique():
        if g != reference:
            iv = mean_interval((wide[reference] - wide[g]).dropna(), level)
            rows.append({group: g, "difference": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)
