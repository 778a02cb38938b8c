"""cpbook.stats and its callers, on data whose right answers are known: simulated tables with a
planted effect, hand-computed textbook cases, and scipy as an independent reference."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from cpbook import stats
from cpbook.llm import analysis as A
from cpbook.synthetic.evaluate import paired_gap, summarize
from cpbook.synthetic.forgetting import closest_minus_farthest, damage_by_bin, locality_rows

Z95 = 1.959963984540054   # Phi^-1(0.975), from tables


# --- the primitives -----------------------------------------------------------------------------

def test_z_value_and_levels():
    assert stats.z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert stats.z_value(0.99) == pytest.approx(2.575829, abs=1e-6)
    assert stats.z_value(stats.LEVEL_FIGURES) < stats.z_value(stats.LEVEL_ASSERTS)
    with pytest.raises(ValueError, match="probability"):
        stats.z_value(2.5758)                 # a z value passed where a level belongs


def test_mean_interval_by_hand():
    # 1..5: mean 3, sd sqrt(2.5), se sqrt(2.5 / 5) = 0.70711, half-width 1.95996 * 0.70711 = 1.38590
    iv = stats.mean_interval([1, 2, 3, 4, 5], 0.95)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((3.0, 1.614096, 4.385904), abs=1e-6)
    assert str(iv) == "3.000 [1.614, 4.386]"
    assert np.isnan(stats.mean_interval([2.0]).low)      # one value: no standard error


def test_grouped_mean_interval_matches_mean_interval_per_group():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": rng.integers(0, 3, 60), "x": rng.normal(size=60)})
    out = stats.grouped_mean_interval(df.groupby("g")["x"], 0.9)
    for g, part in df.groupby("g")["x"]:
        iv = stats.mean_interval(part, 0.9)
        assert out.loc[g, ["mean", "low", "high"]].tolist() == pytest.approx([iv.mean, iv.low, iv.high])
        assert out.loc[g, "n"] == len(part)


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (1, 3), (20, 100), (375, 381)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_wilson_interval_against_scipy(k, n, level):
    iv = stats.wilson_interval(k, n, level)
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert 0 <= iv.low <= k / n <= iv.high <= 1 and iv.mean == k / n


def test_wilson_interval_textbook_cases():
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), by hand at z = 1.96
    iv = stats.wilson_interval(20, 100, 0.95)
    assert (iv.low, iv.high) == pytest.approx((0.1333, 0.2888), abs=1e-4)
    # k = 0 and k = n: the interval is [0, z^2 / (n + z^2)] and [n / (n + z^2), 1]
    zero, full = stats.wilson_interval(0, 10, 0.95), stats.wilson_interval(10, 10, 0.95)
    assert zero.low == 0 and zero.high == pytest.approx(Z95**2 / (10 + Z95**2))
    assert full.high == 1 and full.low == pytest.approx(10 / (10 + Z95**2))
    assert np.isnan(stats.wilson_interval(0, 0).low)


def test_bootstrap_interval_draws_whole_units_as_the_stored_results_did():
    x = np.random.default_rng(1).normal(size=25)
    iv = stats.bootstrap_interval(lambda i: x[i].mean(), len(x), 0.9, n_boot=50, seed=7)
    rng = np.random.default_rng(7)                         # the resampler written out by hand
    boots = [x[rng.integers(0, 25, 25)].mean() for _ in range(50)]
    assert (iv.low, iv.high) == tuple(np.quantile(boots, [(1 - 0.9) / 2, (1 + 0.9) / 2]))
    assert iv.mean == x.mean()


def test_bootstrap_interval_covers_the_true_mean_at_its_level():
    # 300 data sets: the share covered has sd 0.017 around the true coverage, which for the
    # percentile interval of a mean of 100 values is about 0.895 (a 80% or 99% interval fails)
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(300):
        x = rng.normal(loc=2.0, scale=1.0, size=100)
        iv = stats.bootstrap_interval(lambda idx: x[idx].mean(), len(x), 0.9, n_boot=300, seed=i)
        covered += iv.low <= 2.0 <= iv.high
    assert 0.85 <= covered / 300 <= 0.95


def test_pivot_unique_pivots_and_names_duplicates():
    df = pd.DataFrame({"prompt": [0, 0, 1, 1], "predictor": ["a", "b", "a", "b"], "error": [1., 2., 3., 4.]})
    pd.testing.assert_frame_equal(stats.pivot_unique(df, "prompt", "predictor", "error"),
                                  df.pivot(index="prompt", columns="predictor", values="error"))
    twice = pd.concat([df, df.iloc[[2]]])
    with pytest.raises(ValueError, match=r"prompt, predictor.*'prompt': 1, 'predictor': 'a'"):
        stats.pivot_unique(twice, "prompt", "predictor", "error")


# --- the synthetic chapters' statistics ---------------------------------------------------------

def errors_table(B=400, K=5, delta=0.2, tau=0.3, sigma=0.4, seed=0):
    """Errors as evaluate.errors_by_k lays them out. Predictor a = b + delta + u + e, with u a
    per-prompt effect (sd tau) shared across k and e independent noise (sd sigma); a second prior
    holds a different delta, so a paired_gap that mixed priors would be off."""
    rng = np.random.default_rng(seed)
    frames = []
    for prior, d in (("D_cont", delta), ("D_disc", -1.0)):
        b = rng.gamma(2.0, 0.5, size=(B, K))
        a = b + d + rng.normal(0, tau, size=(B, 1)) + rng.normal(0, sigma, size=(B, K))
        for name, err in (("a", a), ("b", b)):
            frames.append(pd.DataFrame({"prior": prior, "predictor": name, "prompt": np.repeat(np.arange(B), K),
                                        "k": np.tile(np.arange(K), B), "error": err.reshape(-1)}))
    return pd.concat(frames, ignore_index=True)


def test_paired_gap_recovers_a_planted_difference_with_the_right_width():
    B, tau, sigma, ks = 400, 0.3, 0.4, range(1, 5)
    errors = errors_table(B=B, delta=0.2, tau=tau, sigma=sigma)
    iv = paired_gap(errors, "D_cont", "a", "b", ks)                     # 99% by default
    assert iv.low < 0.2 < iv.high
    # a prompt's gap averaged over its 4 ks has sd sqrt(tau^2 + sigma^2 / 4); prompts are the units
    expected = stats.z_value(0.99) * np.sqrt(tau**2 + sigma**2 / 4) / np.sqrt(B)
    assert (iv.high - iv.low) / 2 == pytest.approx(expected, rel=0.12)
    flipped = paired_gap(errors, "D_cont", "b", "a", ks)
    assert (flipped.mean, flipped.low, flipped.high) == pytest.approx((-iv.mean, -iv.high, -iv.low))
    narrower = paired_gap(errors, "D_cont", "a", "b", ks, level=0.95)
    assert (narrower.high - narrower.low) / (iv.high - iv.low) == pytest.approx(Z95 / stats.z_value(0.99))
    assert paired_gap(errors, "D_disc", "a", "b", ks).high < -0.9


def test_summarize_is_mean_interval_per_prior_predictor_and_k():
    errors = errors_table(B=50)
    out = summarize(errors).set_index(["prior", "predictor", "k"])
    assert list(out.columns) == ["mean", "n", "ci_low", "ci_high"]
    part = errors[(errors["prior"] == "D_cont") & (errors["predictor"] == "a") & (errors["k"] == 3)]["error"]
    iv = stats.mean_interval(part, 0.95)
    assert out.loc[("D_cont", "a", 3)].tolist() == pytest.approx([iv.mean, 50, iv.low, iv.high])


def planted_locality(c, B=300, K=6, seed=0):
    """Damage = c * g + noise on every (prompt, k): locality_rows' input and the g grid."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(size=(B, K))
    before = pd.DataFrame({"prior": "D_cont", "predictor": "before", "prompt": np.repeat(np.arange(B), K),
                           "k": np.tile(np.arange(K), B), "error": rng.gamma(2.0, 0.5, B * K)})
    after = before.assign(predictor="after",
                          error=before["error"] + c * g.reshape(-1) + rng.normal(0, 0.2, B * K))
    return pd.concat([before, after], ignore_index=True), g


@pytest.mark.parametrize("c", [1.0, -1.0, 0.0])
def test_locality_bins_find_a_planted_effect_of_either_sign_and_none_where_there_is_none(c):
    errors, g = planted_locality(c)
    rows = locality_rows(errors, g, "before", "after")
    effect = closest_minus_farthest(rows, n_boot=300)
    by_bin = damage_by_bin(rows, 0.95)
    if c > 0:
        assert effect.low > 0 and by_bin["damage"].is_monotonic_increasing
    elif c < 0:
        assert effect.high < 0 and by_bin["damage"].is_monotonic_decreasing
    else:
        assert effect.low < 0 < effect.high
    # quartile means of a uniform g are 1/8 and 7/8 apart by 3/4
    assert effect.mean == pytest.approx(0.75 * c, abs=0.06)


def test_pivoting_callers_raise_on_a_duplicated_row_instead_of_averaging():
    errors = errors_table(B=20)
    twice = pd.concat([errors, errors.iloc[[0]].assign(error=99.0)], ignore_index=True)
    with pytest.raises(ValueError, match="share their"):
        paired_gap(twice, "D_cont", "a", "b", range(5))
    loc_errors, g = planted_locality(1.0, B=20)
    with pytest.raises(ValueError, match="share their"):
        locality_rows(pd.concat([loc_errors, loc_errors.iloc[[7]]]), g, "before", "after")
    base, tuned = hand_made_pair()
    with pytest.raises(ValueError, match="share their"):
        A.gap_vs_reference(pd.concat([base, base.iloc[[0]]]), tuned, ["en", "fr"])
    with pytest.raises(ValueError, match="share their"):
        A.paired_rows(base, pd.concat([tuned, tuned.iloc[[3]].assign(icl_correct=True)]))


# --- chapter 5's statistics ---------------------------------------------------------------------

def rows(surface, correct, margins, control=False):
    # one-token answers: the per-token margin is the margin
    return pd.DataFrame({"surface": surface, "task_pair": "repeat|math", "index": range(len(correct)),
                         "control": control, "icl_correct": correct, "if_correct": False,
                         "margin": margins, "margin_per_token": margins})


def hand_made_pair():
    """Per-question drops: en [0, 0, 1, 1, 1, 1], fr [0, 1, 0, 0, 0, 0]; margin shifts en all 2.0,
    fr [1, 0, 1, 0, 1, 0]."""
    base = pd.concat([rows("en", [True] * 6, [1.0] * 6), rows("fr", [True] * 3 + [False] * 3, [1.0] * 6)])
    tuned = pd.concat([rows("en", [True] * 2 + [False] * 4, [-1.0] * 6),
                       rows("fr", [True, False, True, False, False, False], [0.0, 1.0] * 3)])
    return base, tuned


def test_drop_table_by_hand():
    base, tuned = hand_made_pair()
    d = A.drop_table(base, tuned, ["en", "fr"]).set_index("surface")
    assert d.loc["en", ["n", "base_%", "tuned_%"]].tolist() == pytest.approx([6, 100, 100 / 3])
    # en drops 0,0,1,1,1,1: mean 2/3, sd sqrt(4/15) = 0.51640, se 0.21082, 1.96 se = 0.41320
    assert d.loc["en", ["drop", "drop_low", "drop_high"]].tolist() == pytest.approx(
        [66.667, 25.347, 107.986], abs=1e-3)
    assert d.loc["en", ["margin_shift", "shift_low", "shift_high"]].tolist() == pytest.approx([2, 2, 2])
    assert d.loc["en", ["pt_shift", "pt_low", "pt_high"]].tolist() == pytest.approx([2, 2, 2])
    assert d.loc["fr", "drop"] == pytest.approx(100 / 6)
    # the pairing is by question, not by row order
    shuffled = tuned.sample(frac=1, random_state=0)
    pd.testing.assert_frame_equal(A.drop_table(base, shuffled, ["en", "fr"]).set_index("surface"), d)


def test_gap_vs_reference_by_hand():
    base, tuned = hand_made_pair()
    gap = A.gap_vs_reference(base, tuned, ["en", "fr"]).set_index("surface")
    assert list(gap.index) == ["fr"]
    # en minus fr drop per question: 0, -1, 1, 1, 1, 1: mean 0.5, sd sqrt(0.7), se 0.34157,
    # 1.96 se = 0.66946
    assert gap.loc["fr"].tolist() == pytest.approx([50, 50 - 66.946, 50 + 66.946], abs=1e-3)
    shift = A.gap_vs_reference(base, tuned, ["en", "fr"], column="margin_shift", level=0.99)
    # en shift 2 minus fr shift 1, 0, 1, 0, 1, 0: 1, 2, 1, 2, 1, 2; mean 1.5, sd sqrt(0.3)
    half = stats.z_value(0.99) * np.sqrt(0.3) / np.sqrt(6)
    assert shift.iloc[0][["difference", "low", "high"]].tolist() == pytest.approx([1.5, 1.5 - half, 1.5 + half])


def test_pooled_accuracy_by_hand():
    df = pd.concat([rows("en", [True] * 4 + [False] * 1, [np.nan] * 5, control=True),
                    rows("fr", [True] * 3 + [False] * 2, [np.nan] * 5, control=True),
                    rows("en", [True] + [False] * 3, [0.0] * 4), rows("fr", [True] + [False] * 3, [0.0] * 4)])
    acc, (low, high) = A.pooled_accuracy(df, True, 0.99)
    ci = binomtest(7, 10).proportion_ci(confidence_level=0.99, method="wilson")
    assert acc == 0.7 and (low, high) == pytest.approx((ci.low, ci.high))
    acc, (low95, high95) = A.pooled_accuracy(df, False)
    assert acc == 0.25 and (low95, high95) == pytest.approx(A.wilson(2, 8, 0.95))
    assert low95 > A.pooled_accuracy(df, False, 0.99)[1][0]          # 99% is wider


def test_newcombe_difference_of_proportions():
    from cpbook.stats import proportion_difference
    # Newcombe (1998), table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    iv = proportion_difference(56, 70, 48, 80)
    assert abs(iv.mean - 0.2) < 1e-12
    assert abs(iv.low - 0.0524) < 5e-4 and abs(iv.high - 0.3339) < 5e-4


def test_the_crossed_interval_counts_the_runs_spread_and_the_prompts():
    rng = np.random.default_rng(0)
    prompts = rng.normal(0, 0.5, (1, 200))
    same_runs = 0.2 + prompts + rng.normal(0, 0.1, (3, 200))
    spread_runs = same_runs + np.array([[-0.3], [0.0], [0.3]])   # three runs far apart
    a, b = stats.crossed_interval(same_runs, 0.95), stats.crossed_interval(spread_runs, 0.95)
    assert a.mean == pytest.approx(b.mean) and a.low < 0.2 < a.high
    assert (b.high - b.low) > 5 * (a.high - a.low)        # the spread of three runs, with t at ~2 df
    one = stats.crossed_interval(same_runs[:1], 0.95)        # one run: the prompts' t-interval
    assert one == stats.runs_interval(same_runs[0], 0.95)
    assert stats.crossed_interval(np.ones((3, 4))) == stats.Interval(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="complete"):
        stats.crossed_interval(np.array([[1.0, np.nan], [1.0, 2.0]]))


def test_the_crossed_interval_covers_at_about_its_level():
    rng, hits = np.random.default_rng(1), 0
    for _ in range(400):
        y = rng.normal(0, 0.2, (3, 1)) + rng.normal(0, 0.5, (1, 100)) + rng.normal(0, 0.3, (3, 100))
        iv = stats.crossed_interval(y, 0.95)
        hits += iv.low <= 0 <= iv.high
    assert 0.88 < hits / 400 <= 1.0   # Satterthwaite with 2 run df is a little liberal
