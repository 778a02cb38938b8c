"""Figures are drawn for the book's text column: legible at the size the reader sees them."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cpbook import plots  # noqa: E402


def test_text_below_the_smallest_size_fails_the_figure():
    plots.set_style()
    fig, ax = plt.subplots(figsize=(plots.WIDTH, 3))
    ax.set_title("fine")
    ax.text(0.5, 0.5, "too small", fontsize=6)
    with pytest.raises(ValueError, match=r"smallest text .* pt as shown \('too small'\)"):
        plots.show(fig)


def test_a_figure_wider_than_the_column_is_narrowed_to_it(monkeypatch):
    plots.set_style()
    shown = []   # the figure's size and smallest text when it is displayed (show closes it after)
    monkeypatch.setattr(plots, "display", lambda f: shown.append(plots.legibility(f)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3))
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="a line")
        ax.set_xlabel("a label of some length")
    plots.show(fig)
    [(width_px, points, _)] = shown
    assert width_px <= plots.COLUMN_PX and points >= plots.MIN_POINTS


def test_panels_put_d_disc_left():
    table = pd.DataFrame({"prior": ["D_cont", "D_disc", "D_mix"]})
    assert plots.priors_in(table) == ["D_disc", "D_cont", "D_mix"]
