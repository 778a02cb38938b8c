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


def combined(parts: list[str]) -> str:
    """One verdict for a claim of several parts: reproduced (or inverted, or not reproduced)
    when every part is, else partly when at least one part is reproduced, else not reproduced."""
    if not parts or any(p not in VERDICTS for p in parts):
        raise ValueError(f"verdicts must be among {VERDICTS}, not {parts!r}")
    if len(set(parts)) == 1:
        return parts[0]
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
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    from myst_nb import glue  # noqa: PLC0415  the book's build tool: only a chapter being executed needs it
    glue(f"{claim}-ours", ours, display=False)
    glue(f"{claim}-verdict", verdict, display=False)
