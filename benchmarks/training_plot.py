"""The training benchmark's figure: scores with CIs and learning curves, rendered from records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.training_protocol import BASE, PRIMARY, ROWS, ci95


def plot(records: list[dict], path: Path) -> None:
    """Top: score per strategy (mean ± 95% CI); bottom: learning curves, score after each round per
    strategy (mean over seeds; the base model as a flat line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [g for g in ("dual", "interference", "generalization") if any(r["regime"] == g for r in records)]
    fig, axes = plt.subplots(2, len(regimes), figsize=(5 * len(regimes), 7), squeeze=False)
    for j, regime in enumerate(regimes):
        rs = [r for r in records if r["regime"] == regime and r["embedder"] == "minilm"]
        names, means, halves = [], [], []
        for s in ROWS:
            group = [r for r in rs if r["strategy"] == s and r["routing"] == PRIMARY[s]]
            if not group:
                continue
            m, h = ci95([r["score"] for r in group])
            names.append(s), means.append(m), halves.append(0 if np.isnan(h) else h)
            with_curve = [r for r in group if r.get("curve")]
            curves = np.array([r["curve"] for r in with_curve], dtype=float)
            if len(curves):
                x = with_curve[0].get("curve_rounds") or list(range(1, curves.shape[1] + 1))
                axes[1][j].plot(x, np.nanmean(curves, 0), marker="o", label=s)
            elif s == BASE:
                axes[1][j].axhline(m, color="grey", linestyle="--", label=s)
        axes[0][j].bar(names, means, yerr=halves, capsize=3)
        axes[0][j].set_title(f"{regime}: score, mean ± 95% CI")
        axes[0][j].set_ylim(0, 1)
        axes[0][j].tick_params(axis="x", rotation=30)
        axes[1][j].set_title(f"{regime}: learning curves (score after each round)")
        axes[1][j].set_xlabel("round")
        axes[1][j].xaxis.get_major_locator().set_params(integer=True)
        axes[1][j].set_ylim(0, 1)
        axes[1][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
