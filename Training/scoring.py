"""Scores of a model on generated data it never saw in training (seeds from HELD_OUT_SEED_BASE).

One scorer for every task: the task record's generator makes the runs (``score_cases``) and its
``score_extras`` adds what the task reports. The result is a dict with ``dice`` (the headline:
the mean over classes of the pooled Dice, or what the task sets: mean per-volume Dice for CT),
``classes`` ({name: pooled Dice}), ``mean_run_dice`` and ``min_run_dice`` over the runs with
something to find, ``empty_runs`` and ``empty_run_false_pixels`` (runs with nothing to find, and
the pixels labelled in them), ``runs``, ``frames``, ``size``, ``seeds`` [first, last], ``kind``
and ``precision``; a "run" is a fluoroscopy run, a CT volume, an echo clip or an endoscopy video.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .metrics import MetricAccumulator
from .predictor import Predictor
from .seeds import HELD_OUT_SEED_BASE
from .tasks import get_task


def score_synthetic(model, task="catheter", runs=8, frames=8, size=256, seed=None, precision="auto",
                    device="cpu", progress=None, kind="standard") -> dict:
    """Score ``model`` on ``runs`` generated cases of ``task`` (see the module docstring); the
    task record's generator makes the cases and its ``score_extras`` adds its own fields."""
    t = get_task(task)
    if kind not in t.kinds:
        raise InputError(f"task '{task}' has no generated kind '{kind}'; known: {', '.join(t.kinds) or 'none'}")
    seed = HELD_OUT_SEED_BASE if seed is None else seed
    p = Predictor(model, task=task, device=device, precision=precision)
    names = [c["name"] for c in p.spec.classes]
    acc = MetricAccumulator(names)
    per_run, extras, empty_false = [], [], []
    cases = t.generator_module().score_cases(p, seed, runs, frames, size, kind=kind)
    for r, (pred, truth, extra) in enumerate(cases):
        m = acc.add(pred, truth, case_id=str(seed + r))
        if truth.any():
            per_run.append(float(np.mean([m[n]["dice"] for n in names])))
        else:  # nothing to find: its Dice is 1 or 0, so count its false pixels instead
            empty_false.append(int(np.count_nonzero(pred)))
        extras.append(extra)
        if progress:
            progress(r + 1, runs)
    pooled = acc.summary()
    classes = {n: pooled[n]["dice"] for n in names}
    out = {"dice": float(np.mean(list(classes.values()))), "classes": classes,
           "mean_run_dice": float(np.mean(per_run)) if per_run else float("nan"),
           "min_run_dice": float(np.min(per_run)) if per_run else float("nan"),
           "empty_runs": len(empty_false), "empty_run_false_pixels": int(sum(empty_false)), "runs": runs,
           "frames": frames, "size": size, "seeds": [seed, seed + runs - 1], "kind": kind, "precision": p.precision}
    if t.score_extras:
        out.update(t.score_extras(out, extras, pooled))
    return out
