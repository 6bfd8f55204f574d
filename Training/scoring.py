"""Scores of a model on generated data it never saw in training (seeds from HELD_OUT_SEED_BASE).

One scorer per task, all returning a dict with ``dice`` (the headline: pooled Dice for the
catheter and instruments, mean per-volume Dice for CT, mean over classes of the pooled Dice for
echo), ``classes`` ({name: pooled Dice}), ``mean_run_dice`` and ``min_run_dice`` over the runs
with something to find, ``empty_runs`` and ``empty_run_false_pixels`` (runs with nothing to find,
and the pixels labelled in them), ``runs``, ``frames``, ``size``,
``seeds`` [first, last] and ``precision``; a "run" is a fluoroscopy run, a CT volume, an echo clip or an
endoscopy video. Instruments add the pooled ``iou`` and pixel ``accuracy``.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .fluoro import HELD_OUT_SEED_BASE
from .metrics import MetricAccumulator
from .predictor import Predictor


def _catheter(p, seed, runs, frames, size, progress, kind="standard"):
    from . import fluoro

    for r in range(runs):
        x, y = fluoro.generate_run(seed + r, n_frames=frames, size=(size, size), kind=kind)
        yield p.predict(x), y, {}


def _heart_ct(p, seed, runs, frames, size, progress, kind=None):
    """Whole generated chest CTs (slice count and spacing drawn per volume); ``frames`` unused."""
    from . import ct

    for r in range(runs):
        vol, mask, info = ct.generate_ct(seed + r, shape=(None, size, size))
        pred = p.predict(vol, direction=np.eye(3))  # the generator's axes are LPS
        spacing = info["spacing"]
        yield pred, mask, {"heart_ml": info["heart_ml"],
                           "predicted_ml": float((pred == 1).sum() * np.prod(spacing) / 1000), "slices": len(vol)}


def _echo(p, seed, runs, frames, size, progress, kind=None):
    from . import echo
    from .measure import area_per_frame_mm2, ed_es_frames

    for r in range(runs):
        x, y, info = echo.generate_clip(seed + r, n_frames=frames, size=(size, size))
        pred = p.predict(x)
        extra = {"view": info["view"], "ed_ok": False, "es_ok": False}
        try:
            ed, es = ed_es_frames(area_per_frame_mm2(pred, info["pixel_spacing_mm"]))
            extra.update(ed_ok=is_ed(info["contraction"], ed), es_ok=is_es(info["contraction"], es))
        except ValueError:
            pass
        yield pred, y, extra


def _instruments(p, seed, runs, frames, size, progress, kind="standard"):
    from . import endoscopy

    for r in range(runs):
        x, y = endoscopy.generate_video(seed + r, n_frames=frames, size=(size, size), kind=kind)
        yield p.predict(x), y, {}


def is_ed(contraction, frame, tolerance=0.15) -> bool:
    """Whether ``frame`` is end-diastolic in the generator's motion model (contraction 0 relaxed,
    1 fully contracted): within ``tolerance`` of the clip's least contracted frame. A clip of one
    to two cycles can have two ED (or ES) frames of nearly the same LV area, so "the" index of the
    truth is not the test."""
    c = np.asarray(contraction)
    return bool(c[frame] <= c.min() + tolerance)


def is_es(contraction, frame, tolerance=0.15) -> bool:
    c = np.asarray(contraction)
    return bool(c[frame] >= c.max() - tolerance)


SCORERS = {"catheter": _catheter, "heart-ct": _heart_ct, "echo": _echo, "instruments": _instruments}
KINDS = {"catheter": ("standard", "thin-wire"), "heart-ct": ("standard",), "echo": ("standard",),
         "instruments": ("standard", "smoke")}


def score_synthetic(model, task="catheter", runs=8, frames=8, size=256, seed=None, precision="auto",
                    device="cpu", progress=None, kind="standard") -> dict:
    """Score ``model`` on ``runs`` generated cases of ``task`` (see the module docstring)."""
    if task not in SCORERS:
        raise InputError(f"no generator to score task '{task}'; known: {', '.join(SCORERS)}")
    if kind not in KINDS[task]:
        raise InputError(f"task '{task}' has no generated kind '{kind}'; known: {', '.join(KINDS[task])}")
    seed = HELD_OUT_SEED_BASE if seed is None else seed
    p = Predictor(model, task=task, device=device, precision=precision)
    names = [c["name"] for c in p.spec.classes]
    acc = MetricAccumulator(names)
    per_run, extras, empty_false = [], [], []
    cases = SCORERS[task](p, seed, runs, frames, size, progress, kind=kind)
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
    headline = float(np.mean(per_run)) if task == "heart-ct" else float(np.mean(list(classes.values())))
    out = {"dice": headline, "classes": classes,
           "mean_run_dice": float(np.mean(per_run)) if per_run else float("nan"),
           "min_run_dice": float(np.min(per_run)) if per_run else float("nan"),
           "empty_runs": len(empty_false), "empty_run_false_pixels": int(sum(empty_false)), "runs": runs, "frames": frames, "size": size,
           "seeds": [seed, seed + runs - 1], "kind": kind, "precision": p.precision}
    if task == "heart-ct":
        err = [abs(e["predicted_ml"] - e["heart_ml"]) / e["heart_ml"] for e in extras]
        out.update(mean_volume_error=float(np.mean(err)), max_volume_error=float(np.max(err)))
    if task == "instruments":  # pixel accuracy flatters small objects: mostly background is right anyway
        inst = pooled[names[0]]
        out.update(iou=inst["iou"], accuracy=inst["accuracy"])
    if task == "echo":
        out.update(ed_correct=sum(e["ed_ok"] for e in extras), es_correct=sum(e["es_ok"] for e in extras))
    return out
