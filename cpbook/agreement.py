"""How a result recomputed on another kind of CPU is compared with the stored one.

On the kind of CPU a result was made on (the same `provenance.numerics()`), the code reproduces
it bit for bit, and the tests demand that. On another kind, torch's matmul (MKL) and its vector
kernels round differently in the last bits, and training amplifies those bits into differences
of the size another seed gives. There a printed output must still read the same, word for word,
and each number in it must agree with the stored one within

    |now - stored| <= ATOL + RTOL * |stored|,

tolerances chosen from measurement: the chapters made on an AMD EPYC against the same code
executed on an Intel Xeon (the references of commit b578b5d, and the CI runs of chapters 2 and 3
on another Intel Xeon) differ in 267 printed numbers, the median by 0.016 and the largest by
0.19 (the pretrained model's g-matched alpha, 0.267 against 0.092); the bound holds every one,
the largest at 76% of it. A check this coarse still catches a sign flipped or an effect halved
at the size the chapters report; the claims themselves are the chapters' asserts, which run
everywhere. A hex digest (weights' SHA-256) is a word here, not a run of numbers: the weights'
bits are what differs. Where the chapter was also executed on this kind of CPU and that run
stored (`cpbook.references`), the comparison is bit for bit against that run instead.
"""
from __future__ import annotations

import re

from pathlib import Path

from . import references
from .notebooks import stored_numerics
from .provenance import numerics, same_numerics

RTOL = 0.30
ATOL = 0.15

# A decimal number as the chapters print them: a sign, digits, a fraction, an exponent.
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# A digest as provenance prints it: 12 to 64 hex digits, a letter among them (a commit's short
# name, a SHA-256), not the fraction of a decimal number.
DIGEST = re.compile(r"(?<![\w.])(?=[0-9]*[a-f])[0-9a-f]{12,64}(?![\w.])")


def numbers_close(stored: float, now: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return abs(now - stored) <= atol + rtol * abs(stored)


def texts_agree(stored: str, now: str, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """None when `now` reads as `stored` with each number within tolerance; otherwise what
    differs first (the text between the numbers, or one number)."""
    stored, now = DIGEST.sub("<digest>", stored), DIGEST.sub("<digest>", now)
    # the words between the numbers, their spacing aside (a table printed as text aligns its
    # columns to the widest number)
    words_stored, words_now = ([" ".join(w.split()) for w in NUMBER.split(t)] for t in (stored, now))
    if len(words_stored) != len(words_now):
        return f"the text holds {len(words_now) - 1} numbers now, {len(words_stored) - 1} stored"
    if words_stored != words_now:
        a, b = next((a, b) for a, b in zip(words_stored, words_now) if a != b)
        return f"the text differs, not only its numbers: {a!r} stored, {b!r} now"
    for a, b in zip(NUMBER.findall(stored), NUMBER.findall(now)):
        if not numbers_close(float(a), float(b), rtol, atol):
            return f"{b} now against {a} stored, beyond {atol} + {rtol:.0%} of it"
    return None


def outputs_agree(stored, now, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """`texts_agree` for strings (or lists of lines), plain equality for anything else."""
    join = lambda v: "".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v  # noqa: E731
    stored, now = join(stored), join(now)
    if isinstance(stored, str) and isinstance(now, str):
        return texts_agree(stored, now, rtol, atol)
    return None if stored == now else "the outputs differ (not text)"


def pytest_configure(config) -> None:
    """This module is also a pytest plugin (pytest.ini loads it with `-p cpbook.agreement`), so
    the rule holds however pytest is pointed at the chapters."""
    patch_nbval()


def patch_nbval() -> None:
    """Teach nbval the rule above. nbval demands every stored output bit for bit; a chapter
    whose metadata records other numerics than this machine's (cpbook.notebooks.stored_numerics;
    a chapter that records none counts as made elsewhere) gets a second comparison of what nbval
    found different: `outputs_agree`, output by output."""
    # nbval is a test dependency: only the test run that calls this needs it
    from nbval.plugin import IPyNbCell, coalesce_streams, transform_streams_for_comparison  # noqa: PLC0415

    if getattr(IPyNbCell.compare_outputs, "cpbook", False):
        return
    bit_for_bit = IPyNbCell.compare_outputs

    def by_kind(outputs, skip, sanitize):
        """{stream name or MIME type: [its sanitized values in order]}, as nbval pairs them."""
        out = {}
        for o in transform_streams_for_comparison(outputs):
            for key, value in o.items():
                for name, v in (value.items() if key == "data" else [(key, value)]):
                    if key not in skip and name not in skip:
                        out.setdefault(name, []).append(sanitize(v))
        return out

    def compare_outputs(self, test, ref, skip_compare=None):
        if bit_for_bit(self, test, ref, skip_compare):
            return True
        made_with = stored_numerics(self.parent.nb)
        if same_numerics(made_with):
            return False
        here = numerics()
        reference = references.outputs_for(Path(str(self.parent.fspath)).stem, here, self.cell_num, self.cell.source)
        if reference is not None:   # executed on this kind of CPU too: bit for bit against that run
            self.comparison_traceback = []
            if bit_for_bit(self, test, coalesce_streams(reference), skip_compare):
                return True
            self.comparison_traceback.insert(0, (
                f"Compared bit for bit with this chapter as executed on this kind of CPU "
                f"({references.path_for(Path(str(self.parent.fspath)).stem, here).name}, cpbook.references):\n"))
            return False
        skip = skip_compare or self.parent.skip_compare
        now, stored = by_kind(test, skip, self.sanitize), by_kind(ref, skip, self.sanitize)
        if now.keys() != stored.keys() or any(len(now[k]) != len(stored[k]) for k in stored):
            return False                        # nbval's own message says what is missing
        for kind, values in stored.items():
            for a, b in zip(values, now[kind]):
                why = outputs_agree(a, b)
                if why:
                    self.comparison_traceback.insert(0, (
                        f"This chapter was executed with other CPU numerics ({made_with or 'not recorded'}), "
                        f"so its numbers are compared within {ATOL} + {RTOL:.0%} (cpbook.agreement): "
                        f"{kind}: {why}\n"))
                    return False
        self.comparison_traceback = []
        return True

    compare_outputs.cpbook = True
    IPyNbCell.compare_outputs = compare_outputs
