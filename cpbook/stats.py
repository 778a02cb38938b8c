"""The book's confidence intervals, in one place.

Every function takes `level`, the two-sided coverage probability (0.95, 0.99), never a z value:
- LEVEL_FIGURES = 0.95 for bands in figures and descriptive tables,
- LEVEL_ASSERTS = 0.99 for the intervals that assert cells test.

With z = z_value(level) = Phi^-1((1 + level) / 2), Phi the standard normal CDF:
- mean_interval: normal approximation over n independent values x_1..x_n,
      mean +- z * s / sqrt(n),   s the sample standard deviation (ddof = 1).
- wilson_interval: Wilson score interval of k successes in n trials, p = k / n,
      (p + z^2 / 2n  +-  z * sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n),
  computed by scipy.stats.binomtest (exactly 0 at k = 0 and 1 at k = n).
- bootstrap_interval: percentile bootstrap over whole units (prompts): draw n of the n units
  with replacement, n_boot times, recompute the statistic on each draw, and take the
  (1 - level) / 2 and (1 + level) / 2 quantiles of those replicates.

- crossed_interval: the mean of a table y[s, i] of S tuning runs (seeds) by n prompts, each run
  scored on every prompt, y = mu + a_s + b_i + e_si with run, prompt and residual effects all
  random, so Var(mean) = s_a^2 / S + s_b^2 / n + s_e^2 / (S n). From the two-way ANOVA mean
  squares, Var^ = (MS_seed + MS_prompt - MS_resid) / (S n), and the interval is
  mean +- t * sqrt(Var^) with Satterthwaite's degrees of freedom: with few runs and a large
  run-to-run spread, t is that of few runs.

pivot_unique is DataFrame.pivot that names the duplicated keys, so that a table with a row twice
is an error instead of being averaged (as pivot_table does) into a wrong paired difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

LEVEL_FIGURES = 0.95   # bands in figures and descriptive tables
LEVEL_ASSERTS = 0.99   # intervals that assert cells test


def z_value(level: float) -> float:
    """The two-sided normal quantile for a coverage probability: 1.96 for 0.95."""
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage probability such as 0.95, got {level}")
    return float(norm.ppf((1 + level) / 2))


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def mean_interval(values, level: float = LEVEL_FIGURES) -> Interval:
    """Mean of independent values +- z standard errors (NaN bounds with fewer than two values)."""
    v = np.asarray(values, dtype=float)
    z = z_value(level)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return Interval(float(v.mean()), float(v.mean() - z * se), float(v.mean() + z * se))


def runs_interval(estimates, level: float = LEVEL_ASSERTS) -> Interval:
    """Student's t-interval of the mean over independent training runs' estimates: with five
    runs the normal z would understate the width by a third at 99%. NaN bounds below two runs."""
    from scipy import stats as scipy_stats  # noqa: PLC0415  scipy's t quantile; only this needs it

    v = np.asarray(estimates, dtype=float)
    if len(v) < 2:
        return Interval(float(v.mean()) if len(v) else float("nan"), float("nan"), float("nan"))
    half = scipy_stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return Interval(float(v.mean()), float(v.mean() - half), float(v.mean() + half))


def crossed_interval(table, level: float = LEVEL_ASSERTS) -> Interval:
    """Interval of the grand mean of `table` (rows: tuning runs, columns: prompts, no missing
    cells) over runs and prompts both (the module's docstring gives the formula). With one run
    it is the prompts' t-interval and says nothing of another run; callers name how many runs."""
    from scipy import stats as scipy_stats  # noqa: PLC0415  scipy's t quantile; only this needs it

    y = np.asarray(table, dtype=float)
    if y.ndim != 2 or np.isnan(y).any():
        raise ValueError("crossed_interval needs a complete runs x prompts table")
    runs, n = y.shape
    mean = float(y.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"))
    if runs == 1:
        return runs_interval(y[0], level)
    run_means, prompt_means = y.mean(axis=1), y.mean(axis=0)
    ms_run = n * ((run_means - mean) ** 2).sum() / (runs - 1)
    ms_prompt = runs * ((prompt_means - mean) ** 2).sum() / (n - 1)
    resid = y - run_means[:, None] - prompt_means[None, :] + mean
    ms_resid = (resid ** 2).sum() / ((runs - 1) * (n - 1))
    parts = [(ms_run, runs - 1), (ms_prompt, n - 1), (-ms_resid, (runs - 1) * (n - 1))]
    var_sum = ms_run + ms_prompt - ms_resid
    if var_sum <= 0:        # a negative estimate (rare): keep the larger mean square, which only widens
        parts = [max(parts[:2])]
        var_sum = parts[0][0]
    if var_sum == 0:        # every cell the same value
        return Interval(mean, mean, mean)
    df = var_sum ** 2 / sum(m ** 2 / d for m, d in parts)
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * np.sqrt(var_sum / (runs * n))
    return Interval(mean, mean - half, mean + half)


def holm(p_values, level: float = 1 - LEVEL_ASSERTS) -> list[bool]:
    """Holm's step-down rule: which of a family of hypotheses are rejected at family-wise error
    `level` (the smallest p against level / m, the next against level / (m - 1), ..., stopping at
    the first that is not)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > level / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def grouped_mean_interval(groups, level: float = LEVEL_FIGURES) -> pd.DataFrame:
    """mean_interval of every group of a pandas SeriesGroupBy: columns mean, n, low, high,
    indexed by the group keys."""
    z = z_value(level)
    out = groups.agg(mean="mean", sd="std", n="count")
    se = out["sd"] / np.sqrt(out["n"])
    return pd.DataFrame({"mean": out["mean"], "n": out["n"],
                         "low": out["mean"] - z * se, "high": out["mean"] + z * se})


def wilson_interval(k: int, n: int, level: float = LEVEL_FIGURES) -> Interval:
    """Wilson score interval of the proportion k / n (all NaN when n = 0)."""
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high))


def proportion_difference(k1: int, n1: int, k2: int, n2: int, level: float = LEVEL_FIGURES) -> Interval:
    """k1/n1 - k2/n2 for two independent samples, with Newcombe's interval (his method 10: each
    proportion's Wilson interval, combined by squares)."""
    a, b = wilson_interval(k1, n1, level), wilson_interval(k2, n2, level)
    d = a.mean - b.mean
    return Interval(d, d - ((a.mean - a.low) ** 2 + (b.high - b.mean) ** 2) ** 0.5,
                    d + ((a.high - a.mean) ** 2 + (b.mean - b.low) ** 2) ** 0.5)


def bootstrap_interval(statistic, n_units: int, level: float = LEVEL_ASSERTS, n_boot: int = 1000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap of statistic(indices), an array of unit indices (0 .. n_units - 1,
    with repeats): the mean is the statistic on all units.

    Our own resampler rather than scipy.stats.bootstrap: a unit is a whole prompt whose rows
    (one per k) are not independent, so the statistic takes unit indices, not rows; and the
    draws (one rng.integers(0, n, n) per replicate) are those behind the stored chapter
    results, which scipy's resampler would change."""
    rng = np.random.default_rng(seed)
    boots = [statistic(rng.integers(0, n_units, n_units)) for _ in range(n_boot)]
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(statistic(np.arange(n_units))), float(low), float(high))


def require_unique(df: pd.DataFrame, keys: list[str]) -> None:
    """Raise a ValueError naming the first repeated key combinations, if any."""
    dup = df[df.duplicated(keys, keep=False)]
    if len(dup):
        shown = dup[keys].drop_duplicates().head(5).to_dict("records")
        raise ValueError(f"{len(dup)} rows share their ({', '.join(keys)}) with another row, "
                         f"e.g. {shown}")


def pivot_unique(df: pd.DataFrame, index, columns, values) -> pd.DataFrame:
    """DataFrame.pivot (no aggregation), raising a ValueError that names the duplicated keys when
    an (index, columns) pair occurs twice."""
    keys = [index] if isinstance(index, str) else list(index)
    keys += [columns] if isinstance(columns, str) else list(columns)
    require_unique(df, keys)
    return df.pivot(index=index, columns=columns, values=values)
