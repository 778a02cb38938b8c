"""What each chapter found, for the introduction's table of verdicts.

A chapter calls `record(claim, ours, verdict)` once it has computed a claim's numbers: the text
of its result and the verdict are glued into the executed notebook (myst-nb's `glue`, not shown
where it is called), and the introduction pastes them from there. A rerun that changes a result
therefore changes the table; nothing in it is typed by hand.

A verdict compares our interval with the direction the paper reports (`by_sign`), or combines
the verdicts of a claim's parts (`combined`).
"""
from __future__ import annotations

from .stats import Interval

REPRODUCED, PARTLY, NOT_REPRODUCED, INVERTED = "reproduced", "partly", "not reproduced", "inverted"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, INVERTED)

# The vocabulary of a severe test (`severe`, `severe_combined`): an interval can also show an
# effect too small to matter (null), or be too wide, or rest on a failed prerequisite, to say.
NULL, INCONCLUSIVE, MIXED = "null", "inconclusive", "mixed"
SEVERE = (REPRODUCED, INVERTED, NULL, INCONCLUSIVE, MIXED, PARTLY)


def by_sign(iv: Interval, paper_sign: int = 1) -> str:
    """The paper reports an effect of sign `paper_sign` (+1 or -1): reproduced when our interval
    lies wholly on that side of zero, inverted when wholly on the other, else not reproduced."""
    if paper_sign not in (1, -1):
        raise ValueError(f"paper_sign must be +1 or -1, not {paper_sign!r}")
    low, high = sorted((paper_sign * iv.low, paper_sign * iv.high))
    if low > 0:
        return REPRODUCED
    if high < 0:
        return INVERTED
    return NOT_REPRODUCED


def severe(iv: Interval, smallest_effect: float, paper_sign: int = 1, prerequisite: bool = True) -> str:
    """One part of a claim, read from an interval that includes the run-to-run variation:
    reproduced (wholly on the paper's side of zero) or inverted (wholly on the other); null
    (wholly inside +-`smallest_effect`, the smallest effect of interest, stated per claim before
    looking); inconclusive (none of these, or `prerequisite` false: e.g. the base model does not
    do the task, so a drop cannot be read)."""
    if paper_sign not in (1, -1):
        raise ValueError(f"paper_sign must be +1 or -1, not {paper_sign!r}")
    if not smallest_effect > 0:
        raise ValueError(f"the smallest effect of interest must be positive, not {smallest_effect!r}")
    if not prerequisite:
        return INCONCLUSIVE
    low, high = sorted((paper_sign * iv.low, paper_sign * iv.high))
    if low > 0:
        return REPRODUCED
    if high < 0:
        return INVERTED
    if -smallest_effect < low and high < smallest_effect:
        return NULL
    return INCONCLUSIVE


def severe_combined(parts: list[str]) -> str:
    """One verdict over a claim's parts, each from `severe`: the parts' verdict when they agree;
    mixed when some part is inverted and another is not (an inversion is never folded into
    "partly"); partly when some are reproduced and the rest null or inconclusive; inconclusive
    for null and inconclusive parts together."""
    if not parts or any(p not in (REPRODUCED, INVERTED, NULL, INCONCLUSIVE) for p in parts):
        raise ValueError(f"parts must be verdicts of severe(), not {parts!r}")
    if len(set(parts)) == 1:
        return parts[0]
    if INVERTED in parts:
        return MIXED
    if REPRODUCED in parts:
        return PARTLY
    return INCONCLUSIVE


def combined(parts: list[str]) -> str:
    """One verdict for a claim of several parts: reproduced (or inverted, or not reproduced)
    when every part is; mixed when one part is reproduced and another inverted (an inversion is
    never folded into "partly"); else partly when at least one part is reproduced, else not
    reproduced."""
    if not parts or any(p not in VERDICTS + (MIXED,) for p in parts):
        raise ValueError(f"verdicts must be among {VERDICTS + (MIXED,)}, not {parts!r}")
    if len(set(parts)) == 1:
        return parts[0]
    if MIXED in parts or (INVERTED in parts and (REPRODUCED in parts or PARTLY in parts)):
        return MIXED
    return PARTLY if REPRODUCED in parts or PARTLY in parts else NOT_REPRODUCED


def of_rows(table, low: str = "low", high: str = "high", paper_sign: int = 1) -> str:
    """`combined` over the rows of a table of intervals (one per surface, dose, ...), each read
    with `by_sign`."""
    return combined([by_sign(Interval(float("nan"), float(lo), float(hi)), paper_sign)
                     for lo, hi in zip(table[low], table[high])])


def interval_text(iv: Interval, digits: int = 2, scale: float = 1.0) -> str:
    """'-0.43 [-0.51, -0.35]': an estimate and its interval, as the table shows them."""
    return f"{scale * iv.mean:.{digits}f} [{scale * iv.low:.{digits}f}, {scale * iv.high:.{digits}f}]"


def interval_texts(means, lows, highs, digits: int = 2, scale: float = 1.0) -> list[str]:
    """`interval_text` of each row of a table's estimate, low and high columns."""
    return [interval_text(Interval(m, lo, hi), digits, scale) for m, lo, hi in zip(means, lows, highs)]


def record(claim: str, ours: str, verdict: str) -> None:
    """Glue a claim's result (text) and verdict into the notebook being executed, under the keys
    '<claim>-ours' and '<claim>-verdict'; the introduction pastes them."""
    if verdict not in VERDICTS + SEVERE:
        raise ValueError(f"verdict must be one of {VERDICTS + SEVERE}, not {verdict!r}")
    from myst_nb import glue  # noqa: PLC0415  the book's build tool: only a chapter being executed needs it
    glue(f"{claim}-ours", ours, display=False)
    glue(f"{claim}-verdict", verdict, display=False)
