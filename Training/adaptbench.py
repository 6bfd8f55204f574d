"""``cardioseg adapt-bench``: how many corrected frames of a kind of image the bundled model gets
wrong turn it into one that gets it right.

For a task and a shifted kind of its stress suite (``SHIFTED``: images unlike the training
generator's), a pool of frames (twice as many as the largest K) stands for the frames a user
could review (stress seeds from ``POOL_SEED``) and a test set for the frames of the same kind
left to segment (seeds from ``TEST_SEED``; never in the pool). For each K, the first K frames of
the pool in an order (``sequential``: as they come; ``uncertainty``: the bundled model's least certain first,
``Training.predictor.frame_uncertainty``) are exported into a training folder with
``Training.folderwriter.export_frames`` and the bundled model is fine-tuned on them with
``cardioseg train`` settings (``CONFIGS``); the result is scored on the test set. Printed: Dice per
K beside the bundled model's, and the wall time of each fine-tune; written: JSON and a
learning-curve PNG. The pool has one frame per generated run (each its own source, so that
``cardioseg train`` can hold whole sources out for validation), the test set two per run.

One fine-tune moves Dice by about +-0.02 from run to run (which frames were reviewed, the
validation split, the augmentation), more than most differences between settings. With
``repeats`` R each cell is fine-tuned R times, repeat r on its own pool (seeds from
``POOL_SEED + r * REPEAT_STRIDE``: other frames a user might have reviewed) with ``TrainConfig.seed``
r, and scored on the same test set; a row gives the mean, the standard deviation and each run.
Repeat 0 is the single run of ``repeats=1``.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import InputError
from .metrics import MetricAccumulator
from .predictor import Predictor
from .seeds import HELD_OUT_SEED_BASE
from .tasks import ADAPT_SETTINGS, get_task

# the shifted kind per task: where the bundled model is weak and a user would correct frames
SHIFTED = {"catheter": "confusers", "heart-ct": "non-contrast", "echo": "off-axis", "instruments": "smoke"}
POOL_SEED = HELD_OUT_SEED_BASE + 50_000_000
TEST_SEED = HELD_OUT_SEED_BASE + 60_000_000
KS = (5, 10, 25, 50)
REPEAT_STRIDE = 1_000_000  # repeat r's pool: seeds from POOL_SEED + r * REPEAT_STRIDE
POOL_FACTOR = 2  # the pool holds twice the largest K: the review order picks the first K of it
ORDERS = ("sequential", "uncertainty")
# ``cardioseg train`` settings compared; "defaults": what ``cardioseg adapt`` and the modules' Adapt
# use now (``tasks.ADAPT_SETTINGS``); "samples": epochs enough for that many training samples whatever
# K (a fixed amount of work)
CONFIGS = {
    "defaults": {k: v for k, v in ADAPT_SETTINGS.items() if v is not None},
    "previous defaults": {"lr": 1e-4, "batchnorm": "frozen", "epochs": 20},
    "lr 1e-3 BatchNorm update": {"lr": 1e-3, "batchnorm": "update", "epochs": 20},
    "lr 1e-4 BatchNorm update": {"lr": 1e-4, "batchnorm": "update", "epochs": 20},
    "lr 1e-3 encoder 1e-4": {"lr": 1e-3, "encoder_lr": 1e-4, "batchnorm": "frozen", "epochs": 20},
    "lr 1e-3 encoder frozen": {"lr": 1e-3, "encoder_lr": 0.0, "batchnorm": "frozen", "epochs": 20},
    "lr 5e-4 cosine 640 samples": {"lr": 5e-4, "batchnorm": "frozen", "scheduler": "cosine", "samples": 640},
    "lr 1e-3 cosine 640 samples": {"lr": 1e-3, "batchnorm": "frozen", "scheduler": "cosine", "samples": 640},
}


def _stored(image: np.ndarray) -> np.ndarray:
    """A generated frame (float32 holding integers) in the smallest integer type that holds it,
    as a user's image file would be; other values stay float32."""
    if not np.array_equal(image, np.round(image)):
        return image.astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    for dtype in (np.uint8, np.uint16, np.int16):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return image.astype(dtype)
    return image.astype(np.float32)


def frames_of(task: str, kind: str, runs: int, seed: int, per_run: int = 2) -> list:
    """(image, label, source) of ``runs`` stress runs of ``kind``, ``per_run`` frames each (CT:
    axial slices through the heart, evenly spaced over its height)."""
    suite = get_task(task).stress_module()
    out = []
    for r in range(runs):
        source = f"{kind}-{seed + r}"
        if hasattr(suite, "stress_volume"):
            vol, mask, _info = suite.stress_volume(seed + r, kind=kind)
            z = np.flatnonzero(mask.reshape(len(mask), -1).any(1))
            picks = [z[int(len(z) * f)] for f in np.arange(1, per_run + 1) / (per_run + 1)]
            out += [(vol[k], mask[k], source) for k in picks]
        else:
            x, y = suite.stress_run(seed + r, per_run, (256, 256), kind)
            out += [(x[k], y[k], source) for k in range(len(x))]
    return out


def dice_on(model, task: str, frames: list) -> float:
    """Pooled Dice (mean over the classes) of ``model`` on (image, label, source) frames."""
    p = Predictor(model, task=task)
    names = [c["name"] for c in p.spec.classes]
    acc = MetricAccumulator(names)
    for i, (image, label, _source) in enumerate(frames):
        acc.add(p.predict(image[None], direction=np.eye(3), slices=True), label[None], case_id=str(i))
    s = acc.summary()
    return float(np.mean([s[n]["dice"] for n in names]))


def review_order(model, task: str, pool: list, order: str) -> list:
    """The pool in review order: as it comes, or the bundled model's least certain frame first."""
    if order == "sequential":
        return list(pool)
    if order != "uncertainty":
        raise InputError(f"unknown review order '{order}'; known: {', '.join(ORDERS)}")
    p = Predictor(model, task=task)
    u = []
    for image, _label, _source in pool:
        p.predict(image[None], direction=np.eye(3), slices=True)
        u.append(p.stats["uncertainty"][0] if p.stats.get("uncertainty") else 0.0)
    return [pool[i] for i in sorted(range(len(pool)), key=lambda i: (-u[i], i))]


def fine_tune(task: str, frames: list, settings: dict, workdir: Path, model=None) -> tuple[str, float]:
    """Export ``frames`` into a new training folder in ``workdir``, fine-tune ``model`` (default: the
    bundled one) on it with ``settings`` (TrainConfig fields); (model file, wall seconds)."""
    from .folderwriter import Frame, export_frames
    from .train import TrainConfig, train

    data = workdir / "data"
    cases = [Frame(image=_stored(image), label=label.astype(np.uint8), origin=(0.0, 0.0, float(k)),
                   spacing=(0.5, 0.5, 1.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), source=source,
                   frame_index=k) for k, (image, label, source) in enumerate(frames)]
    export_frames(data, task, cases)
    settings = dict(settings)
    samples = settings.pop("samples", None)
    if samples:  # the training sources: all but the validation fifth (TrainConfig.val_fraction 0.2)
        n_train = len(frames) - max(1, round(0.2 * len(frames)))
        settings = {"epochs": -(-samples // max(n_train, 1)), "patience": 10**6, **settings}
    cfg = TrainConfig(data=str(data), task=task, out=str(workdir / "model.safetensors"), ckpt=str(workdir / "ckpt"),
                      **({"init": str(model)} if model else {}), **settings)
    t0 = time.perf_counter()
    r = train(cfg, log=lambda m: None, progress=False)
    return r["out"], time.perf_counter() - t0


def adapt_bench(task: str, kind: str | None = None, ks=KS, configs=("defaults", "previous defaults"),
                orders=("sequential",), test_runs: int = 12, model=None, log=print, overrides=None,
                repeats: int = 1) -> dict:
    """The benchmark of the module docstring; returns {"task", "kind", "bundled", "rows": [{config,
    order, k, dice (the mean over repeats), dice_sd, dice_runs, seconds (the mean)}], ...}.
    ``overrides``: TrainConfig fields set in every setting (a quick check with fewer epochs)."""
    t = get_task(task)
    kind = kind or SHIFTED.get(task)
    suite = t.stress_module()
    if kind not in getattr(suite, "KINDS", ()):
        raise InputError(f"task '{task}' has no stress kind '{kind}'; known: {', '.join(getattr(suite, 'KINDS', ()))}")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise InputError(f"unknown adapt-bench setting '{unknown[0]}'; known: {', '.join(CONFIGS)}")
    ks = sorted(int(k) for k in ks)
    if ks[0] < 2:
        raise InputError("--ks: every K must be >= 2 (one frame trains, one validates)")
    if int(repeats) < 1:
        raise InputError("--repeats must be >= 1")
    model = str(model or t.bundled_model)
    # an order has frames to choose from; each repeat its own pool
    pools = [frames_of(task, kind, POOL_FACTOR * ks[-1], POOL_SEED + r * REPEAT_STRIDE, per_run=1)
             for r in range(int(repeats))]
    test = frames_of(task, kind, test_runs, TEST_SEED)
    bundled = dice_on(model, task, test)
    log(f"{task}, stress kind '{kind}': bundled model {Path(model).name} Dice {bundled:.3f} on {len(test)} test frames")
    rows = []
    for order in orders:
        ordered = [review_order(model, task, pool, order) for pool in pools]
        for config in configs:
            for k in ks:
                runs, times = [], []
                for r, frames in enumerate(ordered):
                    settings = {**CONFIGS[config], **(overrides or {}), "seed": r}
                    with tempfile.TemporaryDirectory(prefix="cardioseg-adapt-") as tmp:
                        out, seconds = fine_tune(task, frames[:k], settings, Path(tmp), model=model)
                        runs.append(dice_on(out, task, test))
                    times.append(seconds)
                dice, sd = float(np.mean(runs)), float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0
                rows.append({"config": config, "order": order, "k": k, "dice": dice, "dice_sd": sd,
                             "dice_runs": runs, "seconds": float(np.mean(times))})
                log(f"  {config:28s} {order:11s} K={k:3d}: Dice {dice:.3f} ({dice - bundled:+.3f})"
                    + (f" +- {sd:.3f} over {len(runs)} runs" if len(runs) > 1 else "")
                    + f", fine-tune {np.mean(times):.0f} s")
    return {"task": task, "kind": kind, "model": Path(model).name, "bundled": bundled, "test_frames": len(test),
            "pool_frames": len(pools[0]), "repeats": len(pools), "rows": rows,
            "settings": {c: {**CONFIGS[c], **(overrides or {})} for c in configs}}


def print_table(r: dict) -> None:
    repeats = r.get("repeats", 1)
    print(f"\n{r['task']} on '{r['kind']}' ({r['test_frames']} test frames): bundled {r['bundled']:.3f}"
          + (f"; each cell the mean of {repeats} fine-tunes on other pools, +- their standard deviation"
             if repeats > 1 else ""))
    ks = sorted({row["k"] for row in r["rows"]})
    width = 21 if repeats > 1 else 14  # a cell: Dice (+-sd) and seconds
    print(f"{'settings, order':44s}" + "".join(f"{'K=' + str(k):>{width}s}" for k in ks))
    keys = sorted({(row["config"], row["order"]) for row in r["rows"]}, key=lambda c: [row["config"] for row in r["rows"]].index(c[0]))
    for config, order in keys:
        cells = {row["k"]: row for row in r["rows"] if (row["config"], row["order"]) == (config, order)}
        print(f"{config + ', ' + order:44s}" + "".join(_cell(cells.get(k), repeats, width) for k in ks))


def _cell(row, repeats: int, width: int) -> str:
    """One table cell: Dice (+- its standard deviation over repeats) and the fine-tune's seconds."""
    if row is None:
        return " " * width
    sd = f"+-{row.get('dice_sd', 0.0):.3f}" if repeats > 1 else ""
    return f"{row['dice']:7.3f}{sd} {row['seconds']:4.0f} s"


def plot(r: dict, path) -> None:
    """Learning curves: Dice against K per setting and order, the bundled model as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for config, order in sorted({(row["config"], row["order"]) for row in r["rows"]}):
        pts = sorted((row["k"], row["dice"], row.get("dice_sd", 0.0)) for row in r["rows"]
                     if (row["config"], row["order"]) == (config, order))
        k, dice, sd = zip(*pts)
        ax.errorbar(k, dice, yerr=sd if r.get("repeats", 1) > 1 else None, marker="o", capsize=3,
                    label=f"{config}, {order}")
    ax.axhline(r["bundled"], color="grey", linestyle="--", label="bundled model")
    ax.set_xscale("log")
    ax.set_xlabel("frames reviewed (K)")
    ax.set_ylabel("Dice on the test frames")
    ax.set_title(f"{r['task']}: stress kind '{r['kind']}'")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(r: dict, out) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    png = out.with_suffix(".png")
    plot(r, png)
    return out, png
