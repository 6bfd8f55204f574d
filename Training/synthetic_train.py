"""Train a task's bundled model from scratch on its synthetic generator.

Each task record (``Training.tasks``) has a ``Recipe`` (the architecture, the preprocessing written
into the model file, the augmentation) and a generator whose ``training_frames(seeds, size)``
gives raw frames and labels. Resumable: every ``--ckpt-every`` steps the model, the
Adam state and the step are written to ``--ckpt`` (keep it outside the repository). Checkpoints
are safetensors too, never pickles.

On a GPU (``device="cuda"``) the generators, not the network, set the pace: ``workers`` processes
draw the batches (``torch.utils.data.DataLoader``). Batch ``s`` holds seeds ``s*batch ..
(s+1)*batch - 1`` and its flips come from ``default_rng(s)``, so the data do not depend on the
number of workers.
"""
from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from safetensors.torch import load_file, save_file

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import InputError
from .metrics import MetricAccumulator
from .modelfile import ModelSpec, save_model
from .preprocess import normalize_intensity, resize
from .seeds import VALIDATION_SEED_BASE
from .tasks import Recipe, get_task

def recipe_for(task: str, architecture: str | None = None, size: int | None = None) -> Recipe:
    """The task record's recipe, with another architecture (default arguments) or square size if given."""
    recipe = get_task(task).recipe
    if recipe is None:
        raise InputError(f"task '{task}' has no synthetic training recipe")
    if architecture and architecture != recipe.architecture:
        recipe = replace(recipe, architecture=architecture, architecture_args={})
    if size:
        recipe = replace(recipe, preprocessing={**recipe.preprocessing, "size": [size, size]})
    return recipe


def _batch(sampler, recipe: Recipe, seeds, rng=None):
    """(x (B, C, H, W) float32 normalised, y (B, 1, H, W) float32 labels) of the generator's
    ``sampler(seeds, size)`` at the recipe's size; with ``rng``, the recipe's random flips."""
    size = tuple(recipe.preprocessing["size"])
    frames, labels = sampler(seeds, size)
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.ascontiguousarray(labels))[:, None].float()
    if tuple(x.shape[-2:]) != size:
        x = resize(x, size)
        y = torch.nn.functional.interpolate(y, size=size, mode="nearest")
    x = normalize_intensity(x, recipe.preprocessing["intensity"])
    if rng is not None:
        for dim in recipe.flip_dims:
            flip = torch.from_numpy(rng.random(len(seeds)) < 0.5)
            x[flip] = x[flip].flip(dim)
            y[flip] = y[flip].flip(dim)
    return x, y


COLOUR_AUGMENT = "hue, saturation, value, RGB shift, channel shuffle: Training.augment defaults"


def _colour_augment(x: torch.Tensor, seed: int) -> torch.Tensor:
    """The default colour transforms of ``Training.augment`` on each (3, H, W) sample of x, on x's
    device (on a GPU they cost next to nothing; on the CPU's generator workers they would cost
    more than the generator)."""
    from .augment import DEFAULT_AUGMENT, build_augment

    colour = {k: DEFAULT_AUGMENT[k] for k in ("hue", "saturation", "value", "rgb_shift", "channel_shuffle")}
    augment = build_augment(colour, seed=seed)
    out = [augment({"image": xi})["image"] for xi in x]
    return torch.stack([torch.as_tensor(o.as_tensor() if hasattr(o, "as_tensor") else o) for o in out])


class _Batches(torch.utils.data.IterableDataset):
    """Training batches ``start .. stop - 1`` in order; DataLoader workers take every n-th."""

    def __init__(self, sampler, recipe: Recipe, start: int, stop: int, batch: int):
        self.sampler, self.recipe, self.start, self.stop, self.batch = sampler, recipe, start, stop, batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # a worker process: one thread each (the main process keeps --threads)
            torch.set_num_threads(1)
        for s in range(self.start + wid, self.stop, n):
            yield _batch(self.sampler, self.recipe, range(s * self.batch, (s + 1) * self.batch),
                         np.random.default_rng(s))


def _save_ckpt(ckpt: Path, model, opt, step, best):
    save_checkpoint(ckpt, model, opt, {"step": step, "best": best})


def _load_ckpt(ckpt: Path, model, opt):
    meta = load_checkpoint(ckpt, model, opt)
    return int(meta["step"]), meta["best"]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else 2.0 * inter / total


def recalibrate_batchnorm(model, batches, momentum=0.1):
    """Re-estimate BatchNorm running statistics with the current weights (no gradient).

    EfficientNet's BN momentum (0.01) lets eval-mode statistics lag far behind fast-moving
    weights; this makes eval mode match the trained weights before validating or exporting.
    Only the BatchNorm layers run in training mode, so the result does not depend on the RNG.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()  # dropout and drop-connect off: the statistics must be those of eval-mode activations
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    with torch.no_grad():
        for x in batches:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                model(x)
    for m in bns:
        m.momentum = momentum
    model.eval()


def train(task="catheter", steps=3000, batch=8, lr=1e-3, ckpt_dir="~/.cache/cardioseg/train",
          out=None, ckpt_every=50, val_every=250, val_frames=24, threads=None, log=print, recipe=None,
          device="cpu", workers=0):
    spec_task = get_task(task)
    recipe = recipe or recipe_for(task)
    sampler = spec_task.generator_module().training_frames
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    ckpt_dir = Path(ckpt_dir).expanduser()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    pre = recipe.preprocessing
    spec = ModelSpec(
        task=task, architecture=recipe.architecture, architecture_args=dict(recipe.architecture_args),
        in_channels=spec_task.in_channels, classes=list(spec_task.classes), preprocessing=pre, version="1.0.0",
    )
    names = [c["name"] for c in spec.classes]
    dev = torch.device(device)
    model = spec.build().to(dev, memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = lambda s: lr * (min(1.0, (s + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) + 0.01)
    multi = spec.out_channels > 1
    loss_fn = DiceCELoss(softmax=True, to_onehot_y=True, batch=True) if multi else DiceCELoss(sigmoid=True, batch=True)
    step, best = 0, {"dice": -1.0, "step": -1}
    last = ckpt_dir / "last.safetensors"
    if last.exists():
        step, best = _load_ckpt(last, model, opt)
        log(f"resumed at step {step}, best {best}")
    vx, vy = _batch(sampler, recipe, range(VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + val_frames))
    vx = vx.to(dev, memory_format=torch.channels_last)
    # training seeds drawn after the last step's
    calib = [_batch(sampler, recipe, range((steps + i) * batch, (steps + i + 1) * batch))[0] for i in range(16)]

    logf = open(ckpt_dir / "log.csv", "a", newline="")
    writer = csv.writer(logf)
    t0, seen = time.time(), 0
    loader = torch.utils.data.DataLoader(_Batches(sampler, recipe, step, steps, batch), batch_size=None, num_workers=workers,
                                         pin_memory=dev.type == "cuda", prefetch_factor=4 if workers else None)
    for x, y in loader:
        model.train()
        x = x.to(dev, non_blocking=True)
        if recipe.colour_augment:
            x = _colour_augment(x, seed=step)
        x = x.to(memory_format=torch.channels_last)
        y = y.to(dev, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = sched(step)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += batch
        if step % 10 == 0:
            log(f"step {step}/{steps} loss {loss.item():.4f} lr {sched(step):.2e} {seen / (time.time() - t0):.1f} img/s")
        val = ""
        if step % val_every == 0 or step == steps:
            recalibrate_batchnorm(model, (c.to(dev, memory_format=torch.channels_last) for c in calib))
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
                p = torch.cat([model(vx[i:i + 8]).float() for i in range(0, len(vx), 8)]).cpu()
            pred = p.argmax(1) if multi else (p[:, 0] > 0)
            acc = MetricAccumulator(names)
            acc.add(pred.to(torch.uint8).numpy(), vy[:, 0].to(torch.uint8).numpy())
            val = acc.mean_dice()
            log(f"step {step} validation dice {val:.4f}"
                + (" (" + ", ".join(f"{n} {v['dice']:.4f}" for n, v in acc.summary().items()) + ")" if multi else ""))
            if val > best["dice"]:
                best = {"dice": float(val), "step": step, "classes": {n: v["dice"] for n, v in acc.summary().items()}}
                save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()},
                          str(ckpt_dir / "best.safetensors"))
        writer.writerow([step, f"{loss.item():.5f}", val])
        logf.flush()
        if step % ckpt_every == 0 or step == steps:
            _save_ckpt(last, model, opt, step, best)
    logf.close()
    if out:
        model.load_state_dict(load_file(str(ckpt_dir / "best.safetensors"), device=str(dev)))
        spec.training = {
            "data": f"{spec_task.generator} generator, seeds 0..{(steps + 16) * batch - 1}, {pre['size'][0]}x{pre['size'][1]}"
                    + (f", random flips of axes {list(recipe.flip_dims)}" if recipe.flip_dims else "")
                    + (f", colour augmentation ({COLOUR_AUGMENT})" if recipe.colour_augment else ""),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
            "steps": steps, "batch": batch, "optimizer": f"Adam lr {lr} cosine",
            "loss": f"Dice + {'CE' if multi else 'BCE'} (MONAI DiceCELoss)",
            "precision": "bf16 autocast", "best_step": best["step"],
        }
        spec.metrics = {"validation_dice": round(best["dice"], 4), "validation_frames": val_frames}
        save_model(out, model, spec)
        log(f"wrote {out}")
    return best
