"""The book's seaborn style and its recurring figures."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

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


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def error_curves(summary: pd.DataFrame, predictors: list[str], priors=("D_disc", "D_cont"),
                 title: str | None = None):
    """Mean error (divided by d) against k, one panel per prior, with confidence bands.

    `summary` is evaluate.summarize's table (mean, ci_low, ci_high per prior/predictor/k).
    """
    fig, axes = plt.subplots(1, len(priors), figsize=(5.2 * len(priors), 3.8), sharey=False)
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
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_curve(history: list[dict], baselines: dict[str, float] | None = None, title: str = "training loss"):
    """Training loss against step, with optional horizontal reference lines."""
    df = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    sns.lineplot(df, x="step", y="loss", ax=ax, color=PALETTE["transformer"], lw=1, label="transformer")
    for name, value in (baselines or {}).items():
        ax.axhline(value, color=PALETTE.get(name), ls="--", lw=1.2, label=f"{name} (Bayes)")
    ax.set_title(title)
    ax.set_ylabel("mean squared error per prompt position")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def show(fig) -> None:
    """Display a figure exactly once and close it, whatever the notebook's matplotlib backend
    (so stored outputs and fresh runs hold the same single figure for nbval to compare)."""
    from IPython.display import display

    display(fig)
    plt.close(fig)
