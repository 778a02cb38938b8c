"""g estimation, both alpha estimators, conjugate prompting and locality binning, checked on a "model"
that is exactly the Bayes mixture, so the right answers are known."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit

from cpbook import stats
from cpbook.synthetic.bayes import bayes_predictions
from cpbook.synthetic.conjugate import conjugate_bayes, conjugate_predict, gamma_rules, scale_labels
from cpbook.synthetic.evaluate import evaluate, output_matched_alpha
from cpbook.synthetic.forgetting import closest_minus_farthest, locality_rows
from cpbook.synthetic.inference import (estimate_g, g_matched_alpha, g_matched_alpha_interval, g_matched_alphas,
                                        g_table)
from cpbook.synthetic.tasks import Prior, discrete_tasks, sample_prompts

D, N, SIGMA, TAU = 3, 4, 0.5, 1.0
TASKS = discrete_tasks(N, D, TAU, 0)


class BayesMixtureModel(torch.nn.Module):
    """Predicts exactly what the Bayes mixture with prior weight `alpha` predicts."""

    def __init__(self, alpha):
        super().__init__()
        self.alpha = alpha

    def forward(self, xs, ys):
        return bayes_predictions(xs, ys, TASKS, SIGMA, TAU, self.alpha).mixture.float()


def prompts(alpha, n=200, seed=0):
    return sample_prompts(Prior(TASKS, TAU, alpha), n, 6, SIGMA, seed, "inference")


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.9])
def test_estimate_g_recovers_the_mixture_weight_of_a_bayes_model(alpha):
    p = prompts(0.5)
    est = estimate_g(BayesMixtureModel(alpha), p, TASKS, SIGMA, TAU, alpha, n_queries=8)
    ok = np.isfinite(est.g_model)
    assert np.allclose(est.g_model[ok], est.g_bayes[ok], atol=1e-3)
    mixed = ok & (est.g_bayes > 0.05) & (est.g_bayes < 0.95)   # where both branches matter (else r2 is 0/0)
    assert est.r2[mixed].min() > 0.999                # Eq. 7 describes such a model exactly
    assert abs(g_matched_alpha(est.g_model, est.llr) - alpha) < 0.01


def test_g_matched_alphas_read_each_models_prior_weight_with_an_interval():
    p = {"D_disc": prompts(1.0, n=60), "D_cont": prompts(0.0, n=60, seed=1)}
    table = pd.concat([g_table(estimate_g(BayesMixtureModel(a), q, TASKS, SIGMA, TAU, 0.5, n_queries=8), prior, name)
                       for name, a in (("low", 0.1), ("high", 0.8)) for prior, q in p.items()])
    fits = g_matched_alphas(table, n_boot=50)
    assert list(fits.index) == ["low", "high"]
    for name, a in (("low", 0.1), ("high", 0.8)):
        assert abs(fits.loc[name, "estimate"] - a) < 0.01
        assert fits.loc[name, "low"] <= fits.loc[name, "estimate"] <= fits.loc[name, "high"]


def test_the_bootstrap_of_the_g_matched_alpha_is_that_of_refitting_each_replicate():
    """g_matched_alpha_interval finds each replicate's grid cell from per-row sums; it must give
    the interval of refitting g_matched_alpha on every resampled set of rows, NaNs included."""
    rng = np.random.default_rng(3)
    llr = rng.normal(0, 3, size=(150, 6))
    g = expit(np.log(0.3 / 0.7) + llr) + rng.normal(0, 0.1, size=llr.shape)
    g[rng.uniform(size=g.shape) < 0.05] = np.nan
    fast = g_matched_alpha_interval(g, llr, n_boot=40, seed=5)
    slow = stats.bootstrap_interval(lambda idx: g_matched_alpha(g[idx], llr[idx]), len(g), n_boot=40, seed=5)
    assert np.allclose([fast.mean, fast.low, fast.high], [g_matched_alpha(g, llr), slow.low, slow.high],
                       rtol=1e-9, atol=1e-12)
    assert 0.2 < fast.mean < 0.4


def test_output_matched_alpha_reads_the_prior_weight_off_predictions():
    p = prompts(0.5, n=300)
    bayes = bayes_predictions(p.xs, p.ys, TASKS, SIGMA, TAU, 0.5)
    for alpha in (0.1, 0.5, 0.95):
        pred = BayesMixtureModel(alpha)(p.xs, p.ys).double()
        assert abs(output_matched_alpha([pred], [bayes]) - alpha) < 0.02
    assert torch.allclose(bayes.mixture_at(0.5), bayes.mixture)
    assert torch.equal(bayes.mixture_at(0.0), bayes.ridge) and torch.equal(bayes.mixture_at(1.0), bayes.discrete)


def test_an_evaluation_computes_each_prediction_once_and_its_tables_derive_from_them():
    calls = []

    class Counting(BayesMixtureModel):
        def forward(self, xs, ys):
            calls.append(len(xs))
            return super().forward(xs, ys)

    p = {"D_disc": prompts(1.0, n=30), "D_cont": prompts(0.0, n=30, seed=1)}
    ev = evaluate({"a": Counting(0.3)}, p, TASKS, SIGMA, TAU, 0.5)
    more = ev.with_models({"b": Counting(0.9)})
    assert len(calls) == 4                          # each model once per prior, never again
    assert more.models == ["a", "b"] and more.bayes is ev.bayes
    errors = more.errors
    assert set(errors["predictor"]) == {"a", "b", "ridge", "discrete", "mixture"}
    assert len(errors) == 2 * 5 * 30 * 6
    cont = errors[(errors["prior"] == "D_cont") & (errors["predictor"] == "b")]
    expected = ((BayesMixtureModel(0.9)(p["D_cont"].xs, p["D_cont"].ys).double() - p["D_cont"].ys.double()) ** 2 / D)
    assert np.allclose(cont["error"].to_numpy(), expected.numpy().reshape(-1))
    assert abs(more.output_matched_alpha("b") - 0.9) < 0.03 and abs(more.output_matched_alpha("a") - 0.3) < 0.03
    assert len(calls) == 4


def test_the_per_prompt_rule_transforms_exactly_where_g_is_below_one_half():
    p = prompts(0.5, n=40)
    g = bayes_predictions(p.xs, p.ys, TASKS, SIGMA, TAU, 0.5).g
    model = BayesMixtureModel(0.5)
    rules = gamma_rules(model, p, g, 2.0)
    plain, scaled = rules["never (gamma = 1)"], rules["always (gamma = 2)"]
    chosen = rules["per prompt, by Bayes g"]
    assert (g < 0.5).any() and (g >= 0.5).any()
    assert torch.equal(chosen[g < 0.5], scaled[g < 0.5]) and torch.equal(chosen[g >= 0.5], plain[g >= 0.5])
    assert not torch.equal(plain, scaled)


def test_label_scaling_round_trip_is_exact_for_ridge_and_collapses_the_discrete_posterior():
    p = prompts(1.0)
    scaled = scale_labels(p, 2.0)
    assert torch.equal(scaled.xs, p.xs) and torch.allclose(scaled.ys, 2 * p.ys)
    before = bayes_predictions(p.xs, p.ys, TASKS, SIGMA, TAU, 0.5)
    after = bayes_predictions(scaled.xs, scaled.ys, TASKS, SIGMA, TAU, 0.5)
    assert torch.allclose(after.ridge / 2.0, before.ridge)       # ridge is linear in y
    _, g_conj = conjugate_bayes(p, TASKS, SIGMA, TAU, 0.5, 2.0)
    assert g_conj[:, 4:].mean() < 0.25 and before.g[:, 4:].mean() > 0.75   # they no longer look discrete
    with pytest.raises(ValueError, match="gamma"):
        scale_labels(p, 0.0)


def test_conjugate_predict_divides_by_gamma():
    p = prompts(0.5, n=20)

    class Echo(torch.nn.Module):             # predicts the previous label: scales with y
        def forward(self, xs, ys):
            return torch.cat([torch.zeros_like(ys[:, :1]), ys[:, :-1]], 1)

    assert torch.allclose(conjugate_predict(Echo(), p, 3.0), conjugate_predict(Echo(), p, 1.0).double(), atol=1e-6)


def test_locality_bins_are_quartiles_within_each_k_and_the_bootstrap_sees_a_real_effect():
    rng = np.random.default_rng(0)
    B, K = 400, 5
    g = rng.uniform(size=(B, K))
    before = pd.DataFrame({"prior": "D_cont", "predictor": "before", "prompt": np.repeat(np.arange(B), K),
                           "k": np.tile(np.arange(K), B), "error": 1.0})
    after = before.assign(predictor="after", error=1.0 + g.reshape(-1) + rng.normal(0, 0.1, B * K))
    rows = locality_rows(pd.concat([before, after]), g, "before", "after")
    assert set(rows["k"]) == {1, 2, 3, 4}
    assert (rows.groupby(["k", "bin"]).size() == B // 4).all()
    effect = closest_minus_farthest(rows, n_boot=200)
    assert effect.low > 0.6                          # true difference of quartile means: 0.75
    flat = rows.assign(damage=rng.normal(0, 0.1, len(rows)))
    null = closest_minus_farthest(flat, n_boot=200)
    assert null.low < 0 < null.high
