"""Calibration of an ensemble's uncertainty (``rsisr evaluate --ensemble N``).

Per pixel and channel: the samples' standard deviation (8-bit units, [0, 255]) against the
absolute error of the ensemble mean as scored (rounded to 8 bits) against the HR image. Two
summaries, over all images:

- the Spearman rank correlation of std and absolute error (does a larger std mark a larger
  error?), on up to :data:`MAX_PER_IMAGE` values per image (a fixed random subset where an image
  has more, so every image counts about alike and memory stays bounded);
- a reliability table and plot: the values in :data:`BINS` bins of equal count by std, each
  bin's mean std against its RMSE. A calibrated std lies near the diagonal (for an ensemble mean
  of N posterior samples the expected squared error is about (1 + 1/N) std^2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

#: Values (pixels x channels) of one image that enter the calibration at most.
MAX_PER_IMAGE = 1 << 16
#: Bins of the reliability table (equal counts by std).
BINS = 10


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (None where
    either side is constant, which leaves it undefined)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else None


def ensemble_runner(model, steps: int, seed: int, device, ensemble: int):
    """LR (B, C, h, w) in [-1, 1] -> (mean, std) of ``ensemble`` samples in [-1, 1] units, as
    ``rsisr upscale --ensemble N`` makes them for an image run as one tile."""
    from rsisr.upscale import make_engine

    engine = make_engine(model, ensemble=ensemble, steps=steps, seed=seed, device=device,
                         precision="auto")  # as upscale's default (and its default batch)

    def run(lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = engine.sample_stats(lr, [(0, 0)] * lr.shape[0])  # [0, 1] units
        return mean.mul_(2.0).sub_(1.0), var.sqrt_().mul_(2.0)

    return run


def ensemble_entry(ensemble: int, seed: int, calibration: "Calibration") -> dict:
    """The report's ``ensemble`` entry: the number of samples, their seeds and the calibration."""
    from rsisr.noise import sample_seeds

    return {"n": ensemble, "seeds": sample_seeds(seed, ensemble), "calibration": calibration.summary()}


class Calibration:
    """Collects (std, |error|) values image by image; :meth:`summary` and :meth:`plot` at the end."""

    def __init__(self, seed: int = 0, max_per_image: int = MAX_PER_IMAGE):
        self.rng = np.random.default_rng(seed)
        self.max_per_image = max_per_image
        self.std: list[np.ndarray] = []
        self.error: list[np.ndarray] = []

    def add(self, std: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> None:
        """``std``: the samples' standard deviation, ``sr``: the scored mean, ``hr``: the truth,
        each (1, 3, H, W) in 8-bit units."""
        s = std.detach().double().cpu().numpy().ravel()
        e = (sr.detach().double().cpu() - hr.detach().double().cpu()).abs().numpy().ravel()
        if s.size > self.max_per_image:
            keep = np.sort(self.rng.choice(s.size, self.max_per_image, replace=False))
            s, e = s[keep], e[keep]
        self.std.append(s.astype(np.float32))
        self.error.append(e.astype(np.float32))

    def summary(self) -> dict:
        """``{"spearman", "n_values", "reliability": [{"std_min", "std_max", "std_mean", "rmse",
        "count"}, ...]}`` (std and RMSE in 8-bit units)."""
        std, error = np.concatenate(self.std).astype(np.float64), np.concatenate(self.error).astype(np.float64)
        order = np.argsort(std, kind="mergesort")
        rows = []
        for part in np.array_split(order, min(BINS, len(order))):
            if part.size:
                s, e = std[part], error[part]
                rows.append({"std_min": float(s.min()), "std_max": float(s.max()), "std_mean": float(s.mean()),
                             "rmse": float(np.sqrt(np.mean(e * e))), "count": int(part.size)})
        return {"spearman": spearman(std, error), "n_values": int(std.size), "reliability": rows}

    @staticmethod
    def plot(path: str | Path, summary: dict, title: str = "") -> Path:
        """The reliability plot of ``summary``: each bin's mean std against its RMSE, and the diagonal."""
        from matplotlib.figure import Figure

        from rsisr.atomic import atomic_path

        rows = summary["reliability"]
        x = [r["std_mean"] for r in rows]
        y = [r["rmse"] for r in rows]
        fig = Figure(figsize=(4.8, 4.2), dpi=110, layout="constrained")
        ax = fig.subplots()
        top = max(max(x, default=1.0), max(y, default=1.0)) * 1.05
        ax.plot([0, top], [0, top], color="0.6", linestyle="--", linewidth=1, label="RMSE = std")
        ax.plot(x, y, marker="o", color="tab:blue", label="bins of equal count")
        rho = summary["spearman"]
        ax.set_title(f"{title}\nSpearman(std, |error|) = {'n/a' if rho is None else f'{rho:.3f}'}", fontsize=10)
        ax.set_xlabel("ensemble std (8-bit levels), bin mean")
        ax.set_ylabel("RMSE of the ensemble mean (8-bit levels)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend(loc="lower right", fontsize=8)
        path = Path(path)
        with atomic_path(path, "figure") as tmp:
            fig.savefig(tmp, format="png")
        return path
