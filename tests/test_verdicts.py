"""The verdicts of the introduction's table, from intervals and from parts of a claim."""
import numpy as np
import pandas as pd
import pytest

from cpbook import stats
from cpbook import verdicts as V
from cpbook.stats import Interval
from cpbook.synthetic.chapter import conjugate_verdict, mixture_verdict, suppression_verdict


@pytest.mark.parametrize("iv, sign, expected", [
    (Interval(0.3, 0.1, 0.5), 1, V.REPRODUCED),
    (Interval(-0.4, -0.5, -0.3), 1, V.INVERTED),
    (Interval(0.1, -0.1, 0.3), 1, V.NOT_REPRODUCED),
    (Interval(-0.4, -0.5, -0.3), -1, V.REPRODUCED),
    (Interval(0.3, 0.1, 0.5), -1, V.INVERTED),
    (Interval(0.0, 0.0, 0.2), 1, V.NOT_REPRODUCED),     # touching zero is not excluding it
])
def test_a_verdict_reads_the_side_of_zero_the_interval_lies_on(iv, sign, expected):
    assert V.by_sign(iv, sign) == expected


def test_parts_combine_into_one_verdict():
    assert V.combined([V.REPRODUCED, V.REPRODUCED]) == V.REPRODUCED
    assert V.combined([V.REPRODUCED, V.INVERTED]) == V.MIXED      # an inversion is never "partly"
    assert V.combined([V.MIXED, V.PARTLY]) == V.MIXED
    assert V.combined([V.PARTLY, V.NOT_REPRODUCED]) == V.PARTLY
    assert V.combined([V.NOT_REPRODUCED, V.INVERTED]) == V.NOT_REPRODUCED
    assert V.combined([V.INVERTED, V.INVERTED]) == V.INVERTED
    with pytest.raises(ValueError):
        V.combined(["fine"])
    with pytest.raises(ValueError):
        V.by_sign(Interval(1, 0, 2), 0)


def test_the_table_text_rounds_and_scales():
    assert V.interval_text(Interval(-0.4271, -0.5049, -0.3481)) == "-0.43 [-0.50, -0.35]"
    assert V.interval_text(Interval(0.1234, 0.1, 0.15), 1, scale=100) == "12.3 [10.0, 15.0]"


def _claims(excess_disc, excess_cont):
    """A chapter-1 claims table: the model's excess over the mixture (interval +-0.01) and a
    gap to the wrong prior of 1.0 [0.9, 1.1] on each prior."""
    rows = {}
    for prior, excess in (("D_disc", excess_disc), ("D_cont", excess_cont)):
        rows[f"transformer - mixture on {prior}, all k"] = dict(mean=excess, low=excess - 0.01, high=excess + 0.01)
        rows[f"wrong prior - mixture on {prior}, all k"] = dict(mean=1.0, low=0.9, high=1.1)
    return pd.DataFrame(rows).T


def test_chapter_1_grades_closeness_to_the_mixture():
    text, verdict = mixture_verdict(_claims(0.05, 0.02))
    assert verdict == V.REPRODUCED and text == "95% of the gap closed on D_disc, 98% of the gap closed on D_cont"
    assert mixture_verdict(_claims(0.3, 0.02))[1] == V.PARTLY          # more than half, less than 90%
    assert mixture_verdict(_claims(0.3, 0.3))[1] == V.PARTLY
    assert mixture_verdict(_claims(0.6, 0.7))[1] == V.NOT_REPRODUCED    # less than half on both


def test_record_glues_the_result_and_the_verdict(monkeypatch):
    shown = []
    import myst_nb.ext.glue as glue_module
    monkeypatch.setattr(glue_module, "ipy_display", lambda data, raw, metadata: shown.append((data, metadata)))
    V.record("claim-4", "-0.43 [-0.50, -0.35]", V.INVERTED)
    names = [m["scrapbook"]["name"] for _, m in shown]
    assert names == ["claim-4-ours", "claim-4-verdict"]
    assert all(any(k.endswith("text/plain") for k in data) for data, _ in shown)
    with pytest.raises(ValueError, match="verdict must be one of"):
        V.record("claim-4", "x", "fine")


def test_chapter_3_reads_suppression_in_two_parts():
    fits = pd.DataFrame({"estimate": [0.2, 0.8], "low": [0.15, 0.7], "high": [0.25, 0.9]},
                        index=["pretrained", "fine-tuned"])
    intact = pd.DataFrame({"damage": [0.01, 0.5], "low": [-0.02, 0.4], "high": [0.04, 0.6]})
    damaged = intact.assign(damage=[0.3, 0.5], low=[0.2, 0.4], high=[0.4, 0.6])
    assert suppression_verdict(fits, intact)[1] == V.REPRODUCED
    assert suppression_verdict(fits, damaged)[1] == V.PARTLY
    assert suppression_verdict(fits.iloc[::-1].set_axis(fits.index), damaged)[1] == V.NOT_REPRODUCED


def _conjugate_errors(recovered: float, rng):
    """D_cont errors of 200 prompts at k = 1, 2: the pretrained model at 1, the fine-tuned one at
    2 (plain) and at 2 - recovered under the transform, with a little noise."""
    rows = []
    for prompt in range(200):
        for k in (1, 2):
            noise = rng.normal(0, 0.05, 3)
            rows += [dict(predictor="pretrained", gamma=1.0, prior="D_cont", prompt=prompt, k=k, error=1 + noise[0]),
                     dict(predictor="fine-tuned", gamma=1.0, prior="D_cont", prompt=prompt, k=k, error=2 + noise[1]),
                     dict(predictor="fine-tuned", gamma=2.0, prior="D_cont", prompt=prompt, k=k,
                          error=2 - recovered + noise[2])]
    return pd.DataFrame(rows)


def test_chapter_4_reads_recovery_and_whether_it_is_complete():
    rng = np.random.default_rng(0)
    text, verdict = conjugate_verdict(_conjugate_errors(0.5, rng), range(1, 3))
    assert verdict == V.PARTLY and text.startswith("gamma 2 recovers 50% of the D_cont damage at k <= 2")
    assert conjugate_verdict(_conjugate_errors(1.0, rng), range(1, 3))[1] == V.REPRODUCED
    assert conjugate_verdict(_conjugate_errors(-0.5, rng), range(1, 3))[1] == V.NOT_REPRODUCED


def test_rows_of_a_table_combine():
    table = pd.DataFrame({"low": [0.1, -0.2], "high": [0.3, 0.2]})
    assert V.of_rows(table) == V.PARTLY
    assert V.of_rows(table.iloc[:1]) == V.REPRODUCED
    assert V.of_rows(table.iloc[:1], paper_sign=-1) == V.INVERTED


# --- the vocabulary of a severe test ------------------------------------------------------------


def _iv(low, high):
    return Interval((low + high) / 2, low, high)


def test_severe_says_reproduced_inverted_null_or_inconclusive():
    assert V.severe(_iv(0.1, 0.3), 0.05) == V.REPRODUCED
    assert V.severe(_iv(-0.3, -0.1), 0.05) == V.INVERTED
    assert V.severe(_iv(-0.3, -0.1), 0.05, paper_sign=-1) == V.REPRODUCED
    assert V.severe(_iv(-0.02, 0.03), 0.05) == V.NULL
    assert V.severe(_iv(-0.02, 0.3), 0.05) == V.INCONCLUSIVE        # too wide to say
    assert V.severe(_iv(0.1, 0.3), 0.05, prerequisite=False) == V.INCONCLUSIVE


def test_an_inversion_is_never_folded_into_partly():
    assert V.severe_combined([V.REPRODUCED, V.INVERTED]) == V.MIXED
    assert V.severe_combined([V.INVERTED, V.NULL]) == V.MIXED
    assert V.severe_combined([V.REPRODUCED, V.NULL, V.INCONCLUSIVE]) == V.PARTLY
    assert V.severe_combined([V.NULL, V.INCONCLUSIVE]) == V.INCONCLUSIVE
    assert V.severe_combined([V.NULL, V.NULL]) == V.NULL
    with pytest.raises(ValueError):
        V.severe_combined([V.PARTLY])
    with pytest.raises(ValueError):
        V.severe(_iv(0, 1), 0.0)


def test_the_interval_over_runs_is_students_t():
    iv = stats.runs_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.99)
    # t(0.995, 4) = 4.604; sd = 1.581; half-width 4.604 * 1.581 / sqrt(5) = 3.255
    assert iv.mean == 3.0 and abs(iv.high - 3.0 - 3.2555) < 1e-3 and abs(3.0 - iv.low - 3.2555) < 1e-3
    assert stats.runs_interval([2.0]).low != stats.runs_interval([2.0]).low   # NaN with one run


def test_holm_steps_down_and_stops_at_the_first_kept():
    assert stats.holm([0.001, 0.04, 0.03], level=0.05) == [True, False, False]   # 0.03 > 0.05 / 2
    assert stats.holm([0.001, 0.02, 0.04], level=0.05) == [True, True, True]      # 0.02 <= 0.025, 0.04 <= 0.05
    assert stats.holm([0.2, 0.001], level=0.05) == [False, True]
