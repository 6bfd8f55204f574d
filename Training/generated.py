"""The parts of a task's generator interface (``Training.tasks.Task.generator``) that follow from
its run function ``run(seed, n_frames, size, kind) -> (frames (T, H, W) or (T, H, W, C) float32,
masks (T, H, W) uint8)``, shared by the generators that have one."""
from __future__ import annotations

import numpy as np


def training_frames(run, seeds, size, kind="standard"):
    """One generated frame of ``kind`` per seed: frames (B, H, W[, C]) float32, masks (B, H, W) uint8."""
    frames, masks = zip(*(run(int(s), 1, size, kind) for s in seeds))
    return np.concatenate(frames), np.concatenate(masks)


def score_runs(run, p, seed, runs, frames, size, kind):
    """(prediction, truth, {}) of ``runs`` generated runs, seeds ``seed``..; ``p`` a Predictor."""
    for r in range(runs):
        x, y = run(seed + r, frames, (size, size), kind)
        yield p.predict(x), y, {}
