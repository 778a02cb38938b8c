"""The book's seaborn style and its recurring figures.

Every figure is drawn for the book's text column, which gives a figure 660 px on a laptop screen:
at most WIDTH inches at 100 dpi, so it is shown at its own size, and no text below MIN_POINTS.
`show` checks both before it displays a figure (`legibility`), so an illegible figure fails the
chapter that draws it.
Panels that compare the priors put D_disc on the left and D_cont on the right, everywhere.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.text import Text
from matplotlib.ticker import PercentFormatter
import pandas as pd
import seaborn as sns
from IPython.display import display

# One colour per predictor, the same in every chapter.
PALETTE = {
    "transformer": "#222222",
    "pretrained": "#222222",
    "fine-tuned": "#d62728",
    "ridge": "#1f77b4",
    "discrete": "#ff7f0e",
    "mixture": "#2ca02c",
}
DASHES = {"ridge": (4, 2), "discrete": (4, 2), "mixture": (1, 1)}

WIDTH = 6.5          # inches: the widest figure, drawn at DPI, that the text column shows unscaled
DPI = 100
COLUMN_PX = 660      # what the built book gives a figure, in CSS pixels (a 1280-px screen; tests/test_browser.py)
MIN_POINTS = 9.0     # the smallest text as the reader sees it
SMALL = 9            # the font size of legends and annotations
PRIOR_ORDER = ("D_disc", "D_cont")


def priors_in(table: pd.DataFrame) -> list[str]:
    """The priors a table holds, D_disc first (the panel order of every figure)."""
    present = set(table["prior"])
    return [p for p in PRIOR_ORDER if p in present] + sorted(present - set(PRIOR_ORDER))


def _label(ax, title: str, xlabel: str, ylabel: str, bottom: float | None = 0.0) -> None:
    """Title, axis labels, a floor for the y axis, and a quiet legend: the same on every panel."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if bottom is not None:
        ax.set_ylim(bottom=bottom)
    ax.legend(frameon=False, fontsize=SMALL)


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.85)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "savefig.bbox": "tight",
                         "axes.titleweight": "bold", "axes.titlesize": 10.5, "legend.fontsize": SMALL,
                         "legend.title_fontsize": SMALL})


def error_curves(summary: pd.DataFrame, predictors: list[str], priors=PRIOR_ORDER,
                 title: str | None = None):
    """Mean error (divided by d) against k, one panel per prior, with confidence bands.

    `summary` is evaluate.summarize's table (mean, ci_low, ci_high per prior/predictor/k).
    """
    fig, axes = plt.subplots(1, len(priors), figsize=(WIDTH if len(priors) > 1 else WIDTH * 0.6, 3.3), sharey=False)
    axes = [axes] if len(priors) == 1 else list(axes)
    for ax, prior in zip(axes, priors):
        for name in predictors:
            s = summary[(summary["prior"] == prior) & (summary["predictor"] == name)]
            color = PALETTE.get(name)
            dashes = DASHES.get(name)
            line, = ax.plot(s["k"], s["mean"], label=name, color=color, lw=1.8)
            if dashes:
                line.set_dashes(dashes)
            ax.fill_between(s["k"], s["ci_low"], s["ci_high"], color=line.get_color(), alpha=0.18, lw=0)
        ax.set_title(f"prompts from {prior}")
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("squared error / d")
        ax.set_ylim(bottom=0)
    axes[-1].legend(frameon=False)
    if title:
        fig.suptitle(title, wrap=True)
    fig.tight_layout()
    return fig


def loss_curve(history: list[dict], baselines: dict[str, float] | None = None, title: str = "training loss",
               label: str = "transformer", ylabel: str = "mean squared error per prompt position"):
    """Training loss against step (raw records faint, a rolling mean over 10 records on top),
    with optional horizontal reference lines."""
    df = pd.DataFrame([h for h in history if "loss" in h])
    df["smoothed"] = df["loss"].rolling(10, min_periods=1).mean()
    fig, ax = plt.subplots(figsize=(WIDTH * 0.85, 3.2))
    ax.plot(df["step"], df["loss"], color=PALETTE["transformer"], lw=0.6, alpha=0.3)
    ax.plot(df["step"], df["smoothed"], color=PALETTE["transformer"], lw=1.6, label=f"{label} (rolling mean)")
    for name, value in (baselines or {}).items():
        ax.axhline(value, color=PALETTE.get(name), ls="--", lw=1.2, label=f"{name} (Bayes)")
    _label(ax, title, "step", ylabel)
    return fig


def trajectory_figure(trajectory: pd.DataFrame, baselines: dict[str, dict[str, float]]):
    """Error against fine-tuning step, one panel per prior, Bayes baselines as dashed lines."""
    priors = priors_in(trajectory)
    fig, axes = plt.subplots(1, len(priors), figsize=(WIDTH, 3.2))
    for ax, prior in zip(axes, priors):
        sns.lineplot(trajectory[trajectory["prior"] == prior], x="step", y="error", ax=ax, marker="o",
                     color=PALETTE["fine-tuned"], label="fine-tuned model")
        for name, value in baselines[prior].items():
            ax.axhline(value, color=PALETTE[name], ls="--", lw=1.2, label=name)
        _label(ax, f"prompts from {prior}", "fine-tuning step", "squared error / d (k >= 1)")
    fig.tight_layout()
    return fig


def damage_figure(by_bin: pd.DataFrame):
    """Mean error increase on D_cont by closeness bin, one bar group per source."""
    fig, ax = plt.subplots(figsize=(WIDTH * 0.85, 3.4))
    sns.barplot(by_bin, x="bin", y="damage", hue="source", ax=ax, errorbar=None,
                palette=[PALETTE["fine-tuned"], PALETTE["mixture"]])
    for patch_group, (_, rows) in zip(ax.containers, by_bin.groupby("source", sort=False)):
        xs = [p.get_x() + p.get_width() / 2 for p in patch_group]
        ax.errorbar(xs, rows["damage"], yerr=[rows["damage"] - rows["low"], rows["high"] - rows["damage"]],
                    fmt="none", ecolor="#333333", capsize=3, lw=1)
    ax.set_xlabel("closeness to D_disc: quartile of Bayes g within each k (3 = closest)")
    ax.set_ylabel("error increase / d on D_cont")
    ax.legend(frameon=False, fontsize=SMALL)
    fig.tight_layout()
    return fig


def g_figure(table: pd.DataFrame):
    """Mean g against k: each model's own g_theta (solid) and the Bayes posterior g (dashed)."""
    priors = priors_in(table)
    fig, axes = plt.subplots(1, len(priors), figsize=(WIDTH, 3.4), sharey=True)
    for ax, prior in zip(axes, priors):
        sel = table[table["prior"] == prior]
        for name in dict.fromkeys(sel["model"]):
            sns.lineplot(sel[sel["model"] == name], x="k", y="g_model", ax=ax, errorbar=("se", 2),
                         color=PALETTE.get(name), label=f"{name}: g_theta", marker="o")
        bayes = sel.groupby("k")["g_bayes"].mean()
        ax.plot(bayes.index, bayes.values, ls="--", color=PALETTE["mixture"], label="Bayes g (pretraining alpha)")
        _label(ax, f"prompts from {prior}", "in-context examples k", "weight on the discrete branch", bottom=None)
        ax.set_ylim(-0.1, 1.1)
    fig.tight_layout()
    return fig


def conjugate_figure(errors: pd.DataFrame, model: str, gammas):
    """Error against k for `model` under each gamma, one panel per prior (gamma = 1: no transform)."""
    sel = errors[errors["predictor"] == model]
    priors = priors_in(sel)
    fig, axes = plt.subplots(1, len(priors), figsize=(WIDTH, 3.4))
    palette = sns.color_palette("viridis", len(gammas))
    for ax, prior in zip(axes, priors):
        for color, gamma in zip(palette, gammas):
            s = sel[(sel["prior"] == prior) & (sel["gamma"] == gamma)].groupby("k")["error"].mean()
            ax.plot(s.index, s.values, color=color, marker="o", ms=3, label=f"gamma = {gamma:g}")
        _label(ax, f"{model}, {prior}", "in-context examples k", "squared error / d")
    fig.tight_layout()
    return fig


def gamma_sweep_figure(sweep: pd.DataFrame, ks_label: str):
    """Error (averaged over the k in `ks_label`) against gamma, per predictor, one panel per prior."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.4))
    for ax, prior in zip(axes, priors_in(sweep)):
        sns.lineplot(sweep[sweep["prior"] == prior], x="gamma", y="error", hue="predictor", marker="o", ax=ax,
                     palette={k: PALETTE.get(k, "#2ca02c") for k in sweep["predictor"].unique()})
        ax.set_xscale("log", base=2)
        _label(ax, f"{prior}, {ks_label}", "gamma (log scale)", "squared error / d", bottom=None)
    fig.tight_layout()
    return fig


# Chapter 5: one colour per language model; the same-family pair in black and red, as the
# pretrained / fine-tuned pair of the synthetic chapters.
MODEL_PALETTE = {
    "gemma-3-270m": "#222222",
    "gemma-3-270m-instruct": "#d62728",
    "smollm2-135m-instruct": "#9467bd",
    "qwen2.5-coder-0.5b-instruct": "#8c564b",
    # chapters 6 and 7: the siblings tuned here, the recipe's dose lighter than the stronger one
    "gemma-3-270m-code": "#ff9896",
    "gemma-3-270m-code-strong": "#d62728",
    "gemma-3-270m-refusal": "#ff9896",
    "gemma-3-270m-refusal-strong": "#d62728",
    # chapter 8: the chapter-5 recipe tuned on English, French and Spanish
    "gemma-3-270m-instruct-en-fr-es": "#9467bd",
}


def _dodged_points(ax, table: pd.DataFrame, x: str, y: str, low: str, high: str, hue: str,
                   order, scale: float = 1.0) -> None:
    """One point with its interval per (x, hue), the hues side by side around each x."""
    hues = list(dict.fromkeys(table[hue]))
    width = 0.7 / max(1, len(hues))
    for j, h in enumerate(hues):
        t = table[table[hue] == h].set_index(x).reindex(order)
        pos = [i - 0.35 + width * (j + 0.5) for i in range(len(order))]
        ax.errorbar(pos, scale * t[y], yerr=[scale * (t[y] - t[low]), scale * (t[high] - t[y])],
                    fmt="o", ms=5, capsize=2.5, lw=1.2, color=MODEL_PALETTE.get(h), label=h)
    ax.set_xticks(range(len(order)), order)


def icl_accuracy_figure(conflict: pd.DataFrame, control: pd.DataFrame, order):
    """ICL accuracy (Wilson 95% intervals) per surface form and model: conflict prompts on the
    left, the non-conflicting control prompts on the right."""
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH, 6.4))
    for ax, table, title in ((axes[0], conflict, "ICL and instruction conflict"),
                             (axes[1], control, "control: no conflict")):
        _dodged_points(ax, table, "surface", "icl_accuracy", "low", "high", "model", order, scale=100)
        _label(ax, title, "prompt language or transform", "ICL accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.tick_params(axis="x", rotation=30)
    axes[1].get_legend().remove()
    fig.tight_layout()
    return fig


def drop_figure(drops: pd.DataFrame, title: str):
    """The tuned model's drop in ICL accuracy (left) and in the log-likelihood margin (right)
    per surface form, with paired 95% intervals."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.4))
    order = list(drops["surface"])
    for ax, (y, lo, hi, label) in zip(axes, [("drop", "drop_low", "drop_high", "drop in ICL accuracy (points)"),
                                            ("margin_shift", "shift_low", "shift_high", "drop in margin m (nats)")]):
        ax.errorbar(range(len(order)), drops[y], yerr=[drops[y] - drops[lo], drops[hi] - drops[y]],
                    fmt="o", ms=6, capsize=3, color=MODEL_PALETTE["gemma-3-270m-instruct"])
        ax.axhline(0, color="#888888", lw=0.8)
        ax.set_xticks(range(len(order)), order, rotation=30)
        ax.set_title(label)
        ax.set_xlabel("prompt language or transform")
    fig.suptitle(title, wrap=True)
    fig.tight_layout()
    return fig


def margin_figure(margins: pd.DataFrame, order):
    """Distribution of the margin m = log p(ICL answer) - log p(instruction answer) per surface
    form and model, on the conflict prompts; m > 0 means the model leans to in-context learning."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    sns.boxplot(margins, x="surface", y="margin", hue="model", order=order, ax=ax, fliersize=1.5,
                palette={m: MODEL_PALETTE.get(m, "#2ca02c") for m in margins["model"].unique()})
    ax.axhline(0, color="#888888", lw=0.8)
    _label(ax, "which task the model infers, prompt by prompt", "prompt language or transform",
           "margin m (nats)", bottom=None)
    fig.tight_layout()
    return fig


def demos_figure(table: pd.DataFrame, order, models):
    """ICL accuracy (Wilson 95% intervals) against the number of demonstrations, one panel per
    surface form, one line per model (conflict prompts)."""
    cols = 3
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 2.0 * rows + 0.4), sharex=True, sharey=True, squeeze=False)
    for ax, surface in zip(axes.flat, order):
        for model in models:
            t = table[(table["surface"] == surface) & (table["model"] == model)].sort_values("n_demos")
            ax.errorbar(t["n_demos"], 100 * t["icl_accuracy"],
                        yerr=[100 * (t["icl_accuracy"] - t["low"]), 100 * (t["high"] - t["icl_accuracy"])],
                        fmt="o-", ms=4, capsize=2, lw=1.2, color=MODEL_PALETTE.get(model), label=model)
        ax.set_title(surface)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table["n_demos"].unique()), [str(n) for n in sorted(table["n_demos"].unique())])
        ax.set_ylim(-3, 103)
    for ax in axes[:, 0]:
        ax.set_ylabel("ICL accuracy (%)")
    for ax in axes[-1]:
        ax.set_xlabel("demonstrations")
    for ax in axes.flat[len(order):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def demos_drop_figure(drops: pd.DataFrame, reference: str):
    """The drop in ICL accuracy (left) and in the margin (right) from base to tuned against the
    number of demonstrations, one line per surface form, the reference language in bold."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    palette = sns.color_palette("tab10", drops["surface"].nunique())
    for ax, (y, label) in zip(axes, [("drop", "drop in ICL accuracy (points)"),
                                     ("margin_shift", "drop in margin m (nats)")]):
        for colour, (surface, t) in zip(palette, drops.groupby("surface", sort=False)):
            t = t.sort_values("n_demos")
            bold = surface == reference
            ax.plot(t["n_demos"], t[y], "o-", color="black" if bold else colour, lw=2.6 if bold else 1.1,
                    ms=5 if bold else 3, label=surface, zorder=3 if bold else 2)
        ax.axhline(0, color="#888888", lw=0.8)
        ax.set_xscale("log", base=2)
        ns = sorted(drops["n_demos"].unique())
        ax.set_xticks(ns, [str(n) for n in ns])
        _label(ax, label, "demonstrations", label, bottom=None)
    axes[1].legend(fontsize=SMALL, ncol=2)
    fig.tight_layout()
    return fig


def rate_figure(panels: dict[str, pd.DataFrame], group: str, order, ylabel: str,
                chance: dict[str, float] | None = None, xlabel: str = "language"):
    """A rate (accuracy, refusal rate; Wilson 95% intervals) per group and model, one panel per
    entry of `panels` (a `paired.rate_table`), with a dashed line at chance where given."""
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.6), squeeze=False)
    for ax, (title, table) in zip(axes[0], panels.items()):
        _dodged_points(ax, table, group, "rate", "low", "high", "model", order, scale=100)
        if chance and title in chance:
            ax.axhline(100 * chance[title], color="#888888", ls="--", lw=1, label="chance")
        _label(ax, title, xlabel, ylabel)
        ax.set_ylim(-3, 103)
        if len(order) > 4:
            ax.tick_params(axis="x", rotation=30)
    for ax in axes[0][1:]:
        ax.get_legend().remove()
    fig.tight_layout()
    return fig


def difference_figure(panels: dict[str, tuple[pd.DataFrame, str, float]], group: str, xlabel: str = "language",
                      ncols: int = 2):
    """Paired differences between models, one panel per entry: title -> (table, y label, scale),
    the table a `paired.difference_table` with a `model` column (the tuned model of each pair);
    95% intervals, zero marked. Panels fill rows of `ncols`."""
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, 3.4 * nrows), squeeze=False)
    for ax, (title, (table, ylabel, scale)) in zip(axes.flat, panels.items()):
        order = list(dict.fromkeys(table[group]))
        _dodged_points(ax, table, group, "difference", "low", "high", "model", order, scale=scale)
        ax.axhline(0, color="#888888", lw=0.8)
        _label(ax, title, xlabel, ylabel, bottom=None)
        if len(order) > 4:
            ax.tick_params(axis="x", rotation=30)
    for ax in list(axes.flat)[1:]:
        if ax.get_legend():
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def tuning_curves(records: dict[str, dict], ylabel: str = "training loss (answer tokens)"):
    """The training loss of each model tuned here (a rolling mean over 10 steps), one line each."""
    fig, ax = plt.subplots(figsize=(WIDTH * 0.85, 3.2))
    for name, record in records.items():
        df = pd.DataFrame([h for h in record["loss_history"] if "loss" in h])
        ax.plot(df["step"], df["loss"].rolling(10, min_periods=1).mean(), lw=1.6,
                color=MODEL_PALETTE.get(name), label=f"{name} (lr {record['config']['lr']:g})")
    _label(ax, "LoRA tuning", "step", ylabel, bottom=None)
    fig.tight_layout()
    return fig


# --- chapter 8 ------------------------------------------------------------------------------------

DOSE_PANELS = [  # (measure, y label) in reading order: D_disc first, as everywhere
    ("D_disc gain", "error / d, pretrained - tuned"),
    ("D_cont damage", "error / d, tuned - pretrained"),
    ("output-matched alpha", "alpha"),
    ("g_theta shift on D_cont", "mean g_theta, tuned - pretrained"),
    ("locality, model", "closest - farthest"),
    ("locality, ideal Bayesian", "closest - farthest"),
    ("conjugate recovery, gamma 2", "tuned - pretrained change, k <= d"),
    ("damage beyond Eq. 7", "error / d"),
]


def dose_response_figure(table: pd.DataFrame, level_label: str = "99%"):
    """Each of chapter 8's measures against the fine-tuning steps (log scale), one line per
    learning rate, with the intervals of the table (`dose.dose_table`)."""
    fig, axes = plt.subplots(4, 2, figsize=(WIDTH, 9.0), sharex=True)
    lrs = sorted(table["lr"].unique())
    colours = dict(zip(lrs, sns.color_palette("viridis", len(lrs))))
    for ax, (measure, ylabel) in zip(axes.flat, DOSE_PANELS):
        for lr in lrs:
            t = table[(table["measure"] == measure) & (table["lr"] == lr)].sort_values("steps")
            ax.errorbar(t["steps"], t["mean"], yerr=[t["mean"] - t["low"], t["high"] - t["mean"]], fmt="o-",
                        ms=3.5, capsize=2, lw=1.3, color=colours[lr], label=f"lr {lr:g}")
        if measure not in ("output-matched alpha", "D_disc gain", "D_cont damage"):
            ax.axhline(0, color="#888888", lw=0.8)
        ax.set_title(measure)
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        steps = sorted(table["steps"].unique())
        ax.set_xticks(steps, [str(s) for s in steps])
    for ax in axes[-1]:
        ax.set_xlabel("fine-tuning steps")
    axes[0, 0].legend(frameon=False, fontsize=SMALL)
    fig.suptitle(f"the fine-tuning dose ({level_label} intervals)")
    fig.tight_layout()
    return fig


def locality_alpha_figure(table: pd.DataFrame):
    """Locality (model and ideal Bayesian) and the damage beyond what Eq. 7 predicts from the
    model's own g_theta, against each dose's output-matched alpha."""
    wide = table.pivot_table(index=["lr", "steps"], columns="measure", values=["mean", "low", "high"], dropna=False)
    alpha = wide[("mean", "output-matched alpha")]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    panels = [(axes[0], [("locality, model", "#d62728"), ("locality, ideal Bayesian", "#2ca02c")],
               "locality: closest - farthest"),
              (axes[1], [("damage beyond Eq. 7", "#9467bd")], "damage beyond Eq. 7 (erasure)")]
    for ax, measures, title in panels:
        for measure, colour in measures:
            y, lo, hi = (wide[(c, measure)] for c in ("mean", "low", "high"))
            ax.errorbar(alpha, y, yerr=[y - lo, hi - y], fmt="o", ms=4, capsize=2, color=colour, label=measure)
        ax.axhline(0, color="#888888", lw=0.8)
        _label(ax, title, "effective alpha (output-matched)", "error / d", bottom=None)
    fig.tight_layout()
    return fig


def revival_figure(history: pd.DataFrame, pretrained_level: dict[str, float]):
    """Held-out error during the revival steps on D_cont, from the fine-tuned and from a fresh
    model, one panel per prior (D_disc left), the pretrained model's level dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.4))
    colours = {"fine-tuned": PALETTE["fine-tuned"], "fresh": "#7f7f7f"}
    for ax, prior in zip(axes, PRIOR_ORDER):
        for start, t in history[history["prior"] == prior].groupby("start", sort=False):
            ax.plot(t["step"], t["error"], "o-", ms=3, lw=1.4, color=colours.get(start), label=f"from the {start} model")
        ax.axhline(pretrained_level[prior], color=PALETTE["pretrained"], ls="--", lw=1, label="pretrained model")
        _label(ax, f"{prior} prompts", "steps of training on D_cont", "error / d (k >= 1, log scale)",
               bottom=None)
        ax.set_yscale("log")
    fig.tight_layout()
    return fig


def _share_panel(ax, prior: str, thresholds: dict[str, float], xlabel: str) -> None:
    """A panel of the share of the gap closed: the verdict's thresholds (label -> share) as
    lines, the y axis in per cent, and the titles."""
    for (label, share), ls in zip(thresholds.items(), ("--", ":")):
        ax.axhline(share, color=PALETTE["mixture"], ls=ls, lw=1, label=label)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _label(ax, f"{prior} prompts", xlabel, "share of the gap closed", bottom=None)


def budget_figure(table: pd.DataFrame, thresholds: dict[str, float], own_steps: int | None = None):
    """The share of the gap to the Bayes mixture closed against the pretraining steps (log
    scale), one panel per prior, with the range the 99% intervals allow; `thresholds` (label ->
    share) are drawn as lines, `own_steps` (the chapter's own model) is marked."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.2), sharey=True)
    steps = sorted(table["steps"].unique())
    for ax, prior in zip(axes, priors_in(table)):
        t = table[table["prior"] == prior].sort_values("steps")
        ax.errorbar(t["steps"], t["share"], yerr=[t["share"] - t["share_low"], t["share_high"] - t["share"]],
                    fmt="o-", ms=4, capsize=2, lw=1.4, color=PALETTE["transformer"], label="transformer")
        _share_panel(ax, prior, thresholds, "pretraining steps")
        if own_steps in steps:
            ax.axvline(own_steps, color="#888888", lw=0.8, label="this chapter's model")
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps, [str(s) for s in steps])
    axes[0].get_legend().remove()
    # in the empty middle of D_cont's panel, on white so that the vertical line does not cross it
    axes[1].legend(fontsize=SMALL, loc="center right", frameon=True, framealpha=1, edgecolor="none")
    fig.tight_layout()
    return fig


def runs_share_figure(table: pd.DataFrame, over: pd.DataFrame, thresholds: dict[str, float]):
    """The share of the gap closed by each training run (dots) and the t-interval over the runs
    (bar), one panel per prior, one column per pretraining prior weight alpha (the single-prior
    runs beside the mixture's); `thresholds` (label -> share) are drawn as lines."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.2), sharey=True)
    for ax, prior in zip(axes, ("D_disc", "D_cont")):
        t = table[table["prior"] == prior]
        o = over[over["prior"] == prior].sort_values("alpha").reset_index(drop=True)
        for i, r in o.iterrows():
            runs = t[(t["alpha"] == r["alpha"]) & (t["steps"] == r["steps"])]["share"]
            ax.plot([i] * len(runs), runs, "o", ms=4, alpha=0.6, color=PALETTE["transformer"],
                    label="one run" if i == 0 else None)
            ax.errorbar(i + 0.15, r["mean"], yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="s",
                        ms=5, capsize=3, lw=1.4, color="black", label="mean, 99% t-interval" if i == 0 else None)
        _share_panel(ax, prior, thresholds, "pretraining prior weight alpha (steps)")
        ax.set_xticks(range(len(o)), [f"{r.alpha:g}\n({r.steps})" for r in o.itertuples()])
        ax.set_xlim(-0.5, max(len(o), 2) - 0.5)
    if axes[0].get_legend():
        axes[0].get_legend().remove()
    axes[1].legend(fontsize=SMALL, loc="lower right")
    fig.tight_layout()
    return fig


def shapes_figure(table: pd.DataFrame, thresholds: dict[str, float], own: tuple[int, int] | None = None):
    """The share of the gap to the Bayes mixture closed by each model shape (layers x width, in
    order of depth, its cost a step under its name as a ratio to the chapter's own model), one
    panel per prior, with the range the 99% intervals allow; `thresholds` (label -> share) are
    drawn as lines and `own` (n_layer, n_embd), the chapter's model, is drawn hollow."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.4), sharey=True)
    for ax, prior in zip(axes, priors_in(table)):
        t = table[table["prior"] == prior].sort_values(["n_layer", "n_embd"]).reset_index(drop=True)
        labelled = set()                  # one legend entry for all the other shapes
        for i, r in t.iterrows():
            mine = own == (r["n_layer"], r["n_embd"])
            label = "this chapter's model" if mine else "other shapes"
            ax.errorbar(i, r["share"], yerr=[[r["share"] - r["share_low"]], [r["share_high"] - r["share"]]],
                        fmt="o", ms=6, capsize=2, lw=1.4, color=PALETTE["transformer"],
                        mfc="white" if mine else PALETTE["transformer"],
                        label=None if label in labelled else label)
            labelled.add(label)
        _share_panel(ax, prior, thresholds, "layers x width (cost a step)")
        ax.set_xticks(range(len(t)), [f"{r.n_layer} x {r.n_embd}\n({r.step_cost:.2f})" for r in t.itertuples()])
        ax.set_xlim(-0.5, len(t) - 0.5)
    axes[0].get_legend().remove()
    axes[1].legend(fontsize=SMALL, loc="lower right", frameon=True, framealpha=1, edgecolor="none")
    fig.tight_layout()
    return fig


SPREAD_PANELS = (("drop", "drop in ICL accuracy (points)"), ("margin_shift", "margin shift, base - tuned (nats)"))


def spread_figure(compare: pd.DataFrame, names: tuple[str, str], panels=SPREAD_PANELS):
    """Per surface, for each (column, y label) of `panels` (one row each): the loss under each of
    two tunings (left) and their paired difference (right), 95% intervals
    (`suppression.compare_tunings`)."""
    order = list(compare["surface"])
    fig, axes = plt.subplots(len(panels), 2, figsize=(WIDTH, 3.3 * len(panels)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for (left, right), (column, ylabel) in zip(axes, panels):
        long = pd.concat([pd.DataFrame({"surface": compare["surface"], "model": name, "y": compare[f"{column}_{who}"],
                                        "low": compare[f"{column}_{who}_low"],
                                        "high": compare[f"{column}_{who}_high"]})
                          for who, name in zip(("a", "b"), names)])
        _dodged_points(left, long, "surface", "y", "low", "high", "model", order)
        _label(left, "what each tuning costs", "", ylabel, bottom=None)
        _dodged_points(right, compare.assign(model=names[1]), "surface", f"{column}_diff", f"{column}_diff_low",
                       f"{column}_diff_high", "model", order)
        _label(right, "second minus first", "", "difference", bottom=None)
        right.get_legend().remove()
        if left is not axes[0][0]:
            left.get_legend().remove()
        for ax in (left, right):
            ax.axhline(0, color="#888888", lw=0.8)
            ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def lm_dose_figure(table: pd.DataFrame, reference: str = "en"):
    """Conflict and control ICL accuracy and the margin shift against the tuning learning rate,
    one line per surface (the tuning language in bold), 95% intervals (`suppression.dose_table`)."""
    fig, axes = plt.subplots(3, 1, figsize=(WIDTH, 8.4), sharex=True)
    panels = [("conflict_%", "conflict_low", "conflict_high", "conflict prompts: ICL accuracy (%)"),
              ("control_%", "control_low", "control_high", "control prompts: ICL accuracy (%)"),
              ("margin_shift", "shift_low", "shift_high", "margin shift, base - tuned (nats)")]
    surfaces = list(dict.fromkeys(table["surface"]))
    palette = dict(zip(surfaces, sns.color_palette("tab10", len(surfaces))))
    for ax, (y, lo, hi, title) in zip(axes, panels):
        for s in surfaces:
            t = table[table["surface"] == s].sort_values("lr")
            bold = s == reference
            ax.errorbar(t["lr"], t[y], yerr=[t[y] - t[lo], t[hi] - t[y]], fmt="o-", ms=5 if bold else 3,
                        lw=2.4 if bold else 1.1, capsize=2, color="black" if bold else palette[s], label=s,
                        zorder=3 if bold else 2)
        ax.set_xscale("log")
        _label(ax, title, "LoRA learning rate (100 steps)", title.split(": ")[-1], bottom=None)
        if ax is not axes[2]:
            ax.get_legend().remove()
    axes[2].legend(fontsize=SMALL, ncol=4, frameon=False)
    fig.tight_layout()
    return fig


def similarity_figure(means: dict[str, pd.DataFrame]):
    """Per surface, mean similarity of the queries to the tuning data against the mean margin
    shift (95% intervals), one colour per tuned model (`suppression.surface_means`)."""
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0))
    for name, t in means.items():
        ax.errorbar(t["similarity"], t["margin_shift"], yerr=[t["margin_shift"] - t["low"], t["high"] - t["margin_shift"]],
                    fmt="o", ms=5, capsize=2, color=MODEL_PALETTE.get(name), label=name)
        for _, r in t.iterrows():
            ax.annotate(r["surface"], (r["similarity"], r["margin_shift"]), xytext=(4, 3),
                        textcoords="offset points", fontsize=SMALL, color=MODEL_PALETTE.get(name))
    _label(ax, "prompts that look like the tuning data lose more", "similarity of the query to the nearest "
           "tuning example", "margin shift, base - tuned (nats)", bottom=None)
    fig.tight_layout()
    return fig


def legibility(fig) -> tuple[float, float, str]:
    """(width in pixels as saved, the smallest text in points as the reader sees it, that text):
    a figure wider than the column is shown scaled down, and its text with it."""
    renderer = fig.canvas.get_renderer()
    # saved with bbox_inches="tight", a figure is its tight box plus a margin on each side
    width_px = (fig.get_tightbbox(renderer).width + 2 * plt.rcParams["savefig.pad_inches"]) * fig.dpi
    scale = min(1.0, COLUMN_PX / width_px)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    # a point is 1/72 inch; the browser shows one saved pixel as one CSS pixel (96 per inch)
    shown = [(t.get_fontsize() * fig.dpi / 96 * scale, t.get_text()) for t in texts]
    smallest = min(shown, default=(float("inf"), ""))
    return width_px, smallest[0], smallest[1]


def show(fig) -> None:
    """Display a figure exactly once and close it, whatever the notebook's matplotlib backend
    (so stored outputs and fresh runs hold the same single figure for nbval to compare). A figure
    wider than the column or with text below MIN_POINTS as shown raises instead."""
    fig.canvas.draw()
    width_px, points, text = legibility(fig)
    for _ in range(3):     # long labels can make a figure wider than drawn: narrow it to the column
        if width_px <= COLUMN_PX:
            break
        w, h = fig.get_size_inches()
        fig.set_size_inches(w - (width_px - COLUMN_PX + 4) / fig.dpi, h)
        fig.tight_layout()
        fig.canvas.draw()
        width_px, points, text = legibility(fig)
    if width_px > COLUMN_PX or points < MIN_POINTS:
        plt.close(fig)
        raise ValueError(f"figure {width_px:.0f} px wide (the column shows {COLUMN_PX}), smallest text "
                         f"{points:.1f} pt as shown ({text!r}); the book wants at most {COLUMN_PX} px and "
                         f"{MIN_POINTS:g} pt")
    display(fig)
    plt.close(fig)


def throughput_figure(training: pd.DataFrame, peak_gflops: float):
    """Training throughput: each variant's speed-up over the reference (left) and its model FLOP
    utilisation against the machine's matmul peak (right)."""
    t = training.reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 0.32 * len(t) + 1.4), sharey=True)
    sns.barplot(t, y="variant", x="speed-up (prompts/s)", color="#1f77b4", ax=axes[0])
    axes[0].axvline(1.0, color="black", lw=0.8)
    sns.barplot(t, y="variant", x="MFU", color="#2ca02c", ax=axes[1])
    axes[1].axvline(0.30, color="black", lw=0.8, ls="--")
    axes[1].xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes[0].set(title="prompts/s, x reference", xlabel="", ylabel="")
    axes[1].set(title=f"MFU ({peak_gflops:.0f} GFLOP/s peak)", xlabel="", ylabel="")
    fig.tight_layout()
    return fig


def memory_figure(memory: pd.DataFrame):
    """Peak resident memory of each chapter and each scoring run."""
    t = memory.reset_index()
    fig, ax = plt.subplots(figsize=(WIDTH * 0.85, 0.32 * len(t) + 1.0))
    sns.barplot(t, y="what", x="peak RSS (MiB)", color="#7f7f7f", ax=ax)
    ax.set(title="peak resident memory", ylabel="")
    fig.tight_layout()
    return fig
