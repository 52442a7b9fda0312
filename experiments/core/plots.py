"""What every figure shares: the families' colours, the Agg backend and the interval band. The figures themselves are
each question's (``experiments.q1_game.plots`` ... ``experiments.q4_temperature.plots``: the report's plots and the
quality-diversity curves of `gvt temperature`), each a PNG written to the path given (no display needed).

matplotlib is imported inside ``_plt()``, when a figure is drawn: the report's tables, the verdicts and the worker
processes never pay for it.
"""

from __future__ import annotations

from pathlib import Path


COLORS = {"transformer": "#1f77b4", "gan-gumbel": "#d62728", "gan-reinforce": "#2ca02c",
          "gan-gumbel-lstm": "#ff7f0e", "gan-reinforce-lstm": "#9467bd", "gan-frozen-d": "#7f7f7f",
          "gan-gumbel-pt": "#e377c2", "gan-reinforce-pt": "#bcbd22", "mle-continued": "#17becf", "hand-over": "k"}


def _color(name: str, i: int = 0) -> str:
    base = name.split(" ")[0]
    return COLORS.get(base, f"C{(i + 3) % 10}")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 110})
    return plt


def _band(ax, xs, ivs, color, label):
    means = [iv.mean for iv in ivs]
    ax.plot(xs, means, "o-", color=color, label=label, lw=1.6, ms=4)
    lo = [iv.low if iv.defined else iv.mean for iv in ivs]
    hi = [iv.high if iv.defined else iv.mean for iv in ivs]
    ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)




def save_figure(fig, path, dpi=None, rect=None) -> Path:
    """Lay ``fig`` out (``rect``: tight_layout's), write it to ``path`` (its folder made; ``dpi``: else the
    figure's) and free it where pyplot holds it. -> the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(**({} if rect is None else {"rect": rect}))
    fig.savefig(path, **({} if dpi is None else {"dpi": dpi}))
    if fig.canvas.manager is not None:  # a pyplot figure (a bare Figure has no manager and nothing to free)
        _plt().close(fig)
    return path
