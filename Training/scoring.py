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
                    device="cpu", progress=None, kind="standard", adapt_bn=False) -> dict:
    """Score ``model`` on ``runs`` generated cases of ``task`` (see the module docstring); the
    task record's generator makes the cases and its ``score_extras`` adds its own fields."""
    t = get_task(task)
    if kind not in t.kinds:
        raise InputError(f"task '{task}' has no generated kind '{kind}'; known: {', '.join(t.kinds) or 'none'}")
    seed = HELD_OUT_SEED_BASE if seed is None else seed
    p = Predictor(model, task=task, device=device, precision=precision, adapt_bn=adapt_bn)
    cases = t.generator_module().score_cases(p, seed, runs, frames, size, kind=kind)
    out, extras, pooled = _pooled_scores(p, cases, seed, runs, progress)
    out.update({"frames": frames, "size": size, "kind": kind})
    if t.score_extras:
        out.update(t.score_extras(out, extras, pooled))
    return out


def score_stress(model, task="catheter", runs=4, frames=4, size=256, seed=None, precision="auto",
                 device="cpu", progress=None, kinds=None, adapt_bn=False) -> dict:
    """Score ``model`` on the task's stress suite (``Task.stress``: images made unlike its training
    generator, never trained on). Returns ``kinds`` ({kind: score_synthetic-like dict, ``dice`` the
    mean over classes of the pooled Dice}), ``mean`` and ``worst``/``worst_kind`` over the kinds
    with something to find, and for the suite's negative kinds (nothing to find) the fraction of
    pixels labelled, ``labelled_fraction``. ``adapt_bn``: BatchNorm statistics re-estimated on
    each run before it is segmented (``Predictor``'s test-time adaptation)."""
    t = get_task(task)
    suite = t.stress_module()
    kinds = list(kinds or suite.KINDS)
    unknown = [k for k in kinds if k not in suite.KINDS]
    if unknown:
        raise InputError(f"task '{task}' has no stress kind '{unknown[0]}'; known: {', '.join(suite.KINDS)}")
    seed = HELD_OUT_SEED_BASE if seed is None else seed
    p = Predictor(model, task=task, device=device, precision=precision, adapt_bn=adapt_bn)
    negative = getattr(suite, "NEGATIVE_KINDS", ())
    per_kind = {}
    for i, kind in enumerate(kinds):
        step = (lambda done, total, i=i: progress(i * runs + done, len(kinds) * runs)) if progress else None
        r, _extras, _pooled = _pooled_scores(p, suite.score_cases(p, seed, runs, frames, size, kind), seed, runs, step)
        r["kind"] = kind
        per_kind[kind] = r
    found = {k: r["dice"] for k, r in per_kind.items() if k not in negative}
    worst = min(found, key=found.get) if found else None
    return {"suite": "stress", "kinds": per_kind, "mean": float(np.mean(list(found.values()))) if found else float("nan"),
            "worst_kind": worst, "worst": found[worst] if worst else float("nan"), "runs": runs, "frames": frames,
            "size": size, "seeds": [seed, seed + runs - 1], "precision": p.precision}


def stress_lines(r: dict) -> list[str]:
    """What ``cardioseg score --suite stress`` prints and the model card shows: one line per kind,
    then the mean and the worst kind."""
    lines = []
    for kind, k in r["kinds"].items():
        if "labelled_fraction" in k and k["empty_runs"] == k["runs"]:
            lines.append(f"  {kind:24s} nothing to find: {100 * k['labelled_fraction']:.2f} % of pixels labelled")
        else:
            per_class = ", ".join(f"{n} {d:.3f}" for n, d in k["classes"].items()) if len(k["classes"]) > 1 else ""
            lines.append(f"  {kind:24s} Dice {k['dice']:.3f}" + (f" ({per_class})" if per_class else ""))
    if r["worst_kind"] is not None:  # some kind with something to find was scored
        lines.append(f"  stress mean Dice {r['mean']:.3f}, worst {r['worst_kind']} {r['worst']:.3f}")
    return lines


def _pooled_scores(p, cases, seed, runs, progress):
    """Pool ``cases`` ((prediction, truth, extra) per run) into the fields of the module docstring."""
    names = [c["name"] for c in p.spec.classes]
    acc = MetricAccumulator(names)
    per_run, extras, empty_false = [], [], []
    pixels = 0
    for r, (pred, truth, extra) in enumerate(cases):
        m = acc.add(pred, truth, case_id=str(seed + r))
        pixels += truth.size
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
           "empty_runs": len(empty_false), "empty_run_false_pixels": int(sum(empty_false)),
           "labelled_fraction": sum(empty_false) / pixels if empty_false and pixels else 0.0,
           "runs": runs, "seeds": [seed, seed + runs - 1], "precision": p.precision}
    return out, extras, pooled
