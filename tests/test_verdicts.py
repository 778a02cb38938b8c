"""The verdicts of the introduction's table, from intervals and from parts of a claim."""
import numpy as np
import pandas as pd
import pytest

from cpbook import stats
from cpbook import verdicts as V
from cpbook.stats import Interval
from cpbook.synthetic.chapter import conjugate_control


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


def _conjugate_errors(recovered: float, helps_pretrained: float, rng):
    """D_cont errors of 200 prompts at k = 1, 2: the pretrained model at 1 (and at 1 -
    helps_pretrained under the transform), the fine-tuned one at 2 (plain) and at 2 - recovered
    under the transform, with a little noise."""
    rows = []
    for prompt in range(200):
        for k in (1, 2):
            noise = rng.normal(0, 0.05, 4)
            rows += [dict(predictor="pretrained", gamma=1.0, prior="D_cont", prompt=prompt, k=k, error=1 + noise[0]),
                     dict(predictor="pretrained", gamma=2.0, prior="D_cont", prompt=prompt, k=k,
                          error=1 - helps_pretrained + noise[3]),
                     dict(predictor="fine-tuned", gamma=1.0, prior="D_cont", prompt=prompt, k=k, error=2 + noise[1]),
                     dict(predictor="fine-tuned", gamma=2.0, prior="D_cont", prompt=prompt, k=k,
                          error=2 - recovered + noise[2])]
    return pd.DataFrame(rows)


def test_chapter_4_measures_recovery_against_the_pretrained_models_own_change():
    rng = np.random.default_rng(0)
    table = conjugate_control(_conjugate_errors(0.5, 0.2, rng), range(1, 3), gammas=(2.0,)).loc[2.0]
    assert table.loc["fine-tuned", "mean"] == pytest.approx(-0.5, abs=0.01)
    assert table.loc["pretrained (control)", "mean"] == pytest.approx(-0.2, abs=0.01)
    assert table.loc["recovery: fine-tuned minus control", "mean"] == pytest.approx(-0.3, abs=0.01)
    # a transform that helps both alike recovers nothing
    same = conjugate_control(_conjugate_errors(0.2, 0.2, rng), range(1, 3), gammas=(2.0,)).loc[2.0]
    row = same.loc["recovery: fine-tuned minus control"]
    assert row["low"] < 0 < row["high"]


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


def test_chapter_3_finds_no_shift_and_no_erasure_between_a_model_and_itself(tmp_path, monkeypatch):
    """suppression_statistics on a tiny world, with the pretrained model standing in for the
    fine-tuned one too: nothing moved, so the g shift, the damage and the damage beyond Eq. 7 are
    all exactly zero; with a real fine-tuning the damage is the paired error difference."""
    from cpbook.synthetic.chapter import g_estimates, suppression_statistics
    from cpbook.synthetic.evaluate import eval_prompts, evaluate
    from cpbook.synthetic.runs import finetuned, pretrained
    from test_runs import tiny

    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    cfg, ft = tiny(eval_prompts=40)
    pre = pretrained(cfg, progress=False)
    prompts = eval_prompts(pre.tasks, cfg.tau, cfg.sigma, cfg.n_points, cfg.eval_prompts, cfg.eval_seed)
    same = {"pretrained": pre.model, "fine-tuned": pre.model}
    g = g_estimates(same, prompts, pre.tasks, cfg, 20, 4, seed=0)
    ev = evaluate(same, prompts, pre.tasks, cfg.sigma, cfg.tau, cfg.alpha)
    table = suppression_statistics(ev, g, cfg)
    assert list(table.index) == ["g_theta shift on D_cont", "D_cont damage", "damage beyond Eq. 7"]
    assert np.allclose(table.to_numpy(dtype=float), 0.0)
    tuned = {"pretrained": pre.model, "fine-tuned": finetuned(cfg, ft, progress=False).model}
    ev = evaluate(tuned, prompts, pre.tasks, cfg.sigma, cfg.tau, cfg.alpha)
    table = suppression_statistics(ev, g_estimates(tuned, prompts, pre.tasks, cfg, 20, 4, seed=0), cfg)
    e = ev.errors[(ev.errors["prior"] == "D_cont") & (ev.errors["prompt"] < 20) & (ev.errors["k"] >= 1)]
    per_prompt = e.pivot_table(index="prompt", columns="predictor", values="error")
    assert table.loc["D_cont damage", "mean"] == pytest.approx((per_prompt["fine-tuned"] - per_prompt["pretrained"]).mean())
