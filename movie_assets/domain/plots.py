"""PNG plots for asset metadata and MLflow artifacts, rendered headless."""

from __future__ import annotations

import io
from collections.abc import Callable


def render_png(
    draw: Callable, title: str, xlabel: str = "", ylabel: str = "", size: tuple[float, float] = (7, 4)
) -> bytes:
    """Call `draw(ax)` on a fresh figure and return it as PNG bytes."""
    import matplotlib  # imported by the steps that plot, not on every load of the code location

    matplotlib.use("Agg")  # headless: plots are rendered to PNG, never shown
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=80)
    try:
        draw(ax)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)
