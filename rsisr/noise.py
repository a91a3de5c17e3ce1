"""Latent noise drawn from scene coordinates (DESIGN.md, Tiling).

The value at latent channel c, global latent row y and column x depends only on (seed, step, c,
y, x): a counter-based generator (SplitMix64 hashing + Box-Muller). Overlapping tiles therefore
see identical noise, and a result does not depend on the tile size or overlap.

An ensemble (``rsisr upscale --ensemble N``) draws its N samples from the fields of N seeds
(:func:`sample_seeds`): the first is ``--seed`` itself, the others are hashed from it.
"""

from __future__ import annotations

import numpy as np

_OFFSET = 1 << 24  # keeps negative coordinates (halo beyond the scene's top-left) distinct
_MASK64 = 0xFFFFFFFFFFFFFFFF
#: Domain separation of the ensemble's seed hashing from the noise's own hashing (any odd constant).
_ENSEMBLE_SALT = 0x5EED_E45E_4B1E_0001
#: Derived seeds lie in [0, 2**53): exact as JSON numbers and as float64.
_SEED_RANGE = 1 << 53


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def scene_noise(seed: int, channels: int, y0: int, x0: int, height: int, width: int, step: int = 0) -> np.ndarray:
    """Standard-normal noise (channels, height, width) float32 for the latent window whose
    top-left global latent coordinate is (y0, x0)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))[0]
        key = _splitmix64(np.array([key ^ np.uint64(step)], dtype=np.uint64))[0]
        c = np.arange(channels, dtype=np.uint64)[:, None, None]
        y = (np.arange(height, dtype=np.int64) + y0 + _OFFSET).astype(np.uint64)[None, :, None]
        x = (np.arange(width, dtype=np.int64) + x0 + _OFFSET).astype(np.uint64)[None, None, :]
        counter = (c << np.uint64(50)) | (y << np.uint64(25)) | x
        h1 = _splitmix64(counter ^ key)
        h2 = _splitmix64(h1 ^ np.uint64(0xD1B54A32D192ED03))
    # 53-bit uniforms in (0, 1] and [0, 1)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) / 9007199254740992.0
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 9007199254740992.0
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def sample_seeds(seed: int, n: int) -> list[int]:
    """The noise seeds of the ``n`` samples of an ensemble of ``--seed seed``.

    Sample 0 is ``seed`` itself, so an ensemble of one is the plain run, and the first sample of
    any ensemble is what ``--seed seed`` gives. Sample k > 0 gets SplitMix64(SplitMix64(seed ^
    salt) ^ k) modulo 2**53: a function of (seed, k) alone, so sample k of an ensemble has the
    noise of the single run ``--seed`` (that seed), and the fields of different samples are
    independent.
    """
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([(int(seed) & _MASK64) ^ _ENSEMBLE_SALT], dtype=np.uint64))
        derived = _splitmix64(key ^ np.arange(1, max(1, n), dtype=np.uint64)) % np.uint64(_SEED_RANGE)
    return [int(seed)] + [int(d) for d in derived[: max(0, n - 1)]]


def tile_noises(latent_shape, seed, steps: int, origins, h: int, w: int) -> list[np.ndarray]:
    """THE noise of every model run (``rsisr upscale``, ``model.upscale``, ``rsisr evaluate``,
    validation during training): for LR tiles of h x w whose top-left LR scene coordinates are
    ``origins`` [(y, x), ...], one (B, Z, h', w') batch per step, cut from the scene field at
    latent origin (y // 2, x // 2). ``latent_shape(h, w, 1)`` -> (1, Z, h', w'). An image run
    whole is the tile at (0, 0), so ``rsisr evaluate --seed S`` scores what ``rsisr upscale
    --seed S`` writes for it. ``seed``: one seed for every tile, or one per tile (an ensemble's
    samples of several tiles in one batch)."""
    _, z, lh, lw = latent_shape(h, w, 1)
    seeds = [seed] * len(origins) if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != len(origins):
        raise ValueError(f"{len(seeds)} seeds for {len(origins)} tiles")
    return [np.stack([scene_noise(s, z, y // 2, x // 2, lh, lw, step) for s, (y, x) in zip(seeds, origins)])
            for step in range(steps)]
