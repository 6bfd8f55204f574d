"""Train a task's bundled model from scratch on its synthetic generator.

Each task record (``Training.tasks``) has a ``Recipe`` (the architecture, the preprocessing written
into the model file, the augmentation) and a generator whose ``training_frames(seeds, size)``
gives raw frames and labels. The loop is ``Training.trainer.Trainer``'s, fed by ``GeneratorSource``.
Resumable: every ``--ckpt-every`` steps and at each validation the model, the Adam state and the
trainer's state (step, best Dice) are written to ``--ckpt`` (keep it outside the repository).
Checkpoints are safetensors too, never pickles.

On a GPU (``device="cuda"``) the generators, not the network, set the pace: ``workers`` processes
draw the batches (``torch.utils.data.DataLoader``). Batch ``s`` holds seeds ``s*batch ..
(s+1)*batch - 1`` and its flips come from ``default_rng(s)``, so the data do not depend on the
number of workers.
"""
from __future__ import annotations

import csv
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .modelfile import ModelSpec, check_task, load_model, read_spec, save_model
from .pretrained import ARCHITECTURE as PRETRAINED_ARCHITECTURE
from .preprocess import normalize_intensity, resize
from .seeds import VALIDATION_SEED_BASE
from .tasks import Recipe, get_task
from .trainer import Source, Trainer, TrainState, batchnorm_layers, bf16_is_fast


INITS = ("random", "imagenet")
KEEP = ("best", "last")  # which step's weights the model file gets


def recipe_for(task: str, architecture: str | None = None, size: int | None = None, init: str | None = None,
               kind: str | None = None, mode: str | None = None, from_model=None) -> Recipe:
    """The task record's recipe, with another architecture (default arguments), square size,
    initialisation (``Recipe.init``: "random" or "imagenet"), generator kind of run or
    preprocessing mode ("resize" or "tile") if given. ``from_model``: a model file of the task
    whose network, preprocessing and weights the run continues from (``Recipe.init`` "model")."""
    t = get_task(task)
    recipe = t.recipe
    if recipe is None:
        raise InputError(f"task '{task}' has no synthetic training recipe")
    if from_model is not None:
        if architecture or size or init or mode:
            raise InputError("--from-model brings its own network, size, mode and weights: leave out --arch, --size, "
                             "--mode and --init-encoder")
        spec = read_spec(from_model)
        check_task(Path(from_model), spec, task)
        recipe = replace(recipe, architecture=spec.architecture, architecture_args=dict(spec.architecture_args),
                         preprocessing=dict(spec.preprocessing), init="model")
    if kind:
        if kind not in t.kinds:
            raise InputError(f"task '{task}' has no generated kind '{kind}'; known: {', '.join(t.kinds)}")
        recipe = replace(recipe, kind=kind)
    if mode:
        recipe = replace(recipe, preprocessing={**recipe.preprocessing, "mode": mode})
    if architecture and architecture != recipe.architecture:  # ImageNet weights only where there are some
        recipe = replace(recipe, architecture=architecture, architecture_args={},
                         init=recipe.init if architecture == PRETRAINED_ARCHITECTURE else "random")
    if size:
        recipe = replace(recipe, preprocessing={**recipe.preprocessing, "size": [size, size]})
    if init:
        if init not in INITS:
            raise InputError(f"unknown initialisation '{init}'; known: {', '.join(INITS)}")
        recipe = replace(recipe, init=init)
    return recipe


def _sampler(task, recipe: Recipe):
    """The generator's ``training_frames(seeds, size)``, of the recipe's kind of run."""
    frames = task.generator_module().training_frames
    return frames if recipe.kind == "standard" else partial(frames, kind=recipe.kind)


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

    def __init__(self, sampler, recipe: Recipe, start: int, stop: int, batch: int, first_seed: int = 0):
        self.sampler, self.recipe, self.start, self.stop, self.batch = sampler, recipe, start, stop, batch
        self.first_seed = first_seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # a worker process: one thread each (the main process keeps --threads)
            torch.set_num_threads(1)
        f = self.first_seed
        for s in range(self.start + wid, self.stop, n):
            yield _batch(self.sampler, self.recipe, range(f + s * self.batch, f + (s + 1) * self.batch),
                         np.random.default_rng(f + s))


def cosine_lr(lr: float, steps: int, warmup: int = 100):
    """The learning rate of step s (0-based): linear warm-up over ``warmup`` steps, cosine decay
    to 0 at ``steps``, plus a floor of 1% of ``lr``."""
    return lambda s: lr * (min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) + 0.01)


class GeneratorSource(Source):
    """Feeds the Trainer from a task's generator: step s trains on seeds s*batch .. (s+1)*batch - 1
    (``_Batches``, drawn by ``workers`` DataLoader processes). An "epoch" ends at each validation:
    every ``val_every`` steps and at the last step; validation frames come from seeds
    VALIDATION_SEED_BASE on, BatchNorm calibration batches from the seeds after the last step's."""

    def __init__(self, sampler, recipe: Recipe, steps, batch, val_every, val_frames, device, workers, *, lr_at, log,
                 logf, first_seed=0):
        self.sampler, self.recipe, self.steps, self.batch, self.val_every = sampler, recipe, steps, batch, val_every
        self.first_seed = first_seed
        self.device, self.workers, self.lr_at, self.log = device, workers, lr_at, log
        self.logf, self.csv = logf, csv.writer(logf)  # log.csv: step, loss, validation Dice
        vx, vy = _batch(sampler, recipe, range(VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + val_frames))
        self.vx, self.vy = vx.to(device, memory_format=torch.channels_last), vy[:, 0].to(torch.uint8).numpy()
        f = first_seed
        self.calib = [_batch(sampler, recipe, range(f + (steps + i) * batch, f + (steps + i + 1) * batch))[0]
                      for i in range(16)]
        self._loader, self.t0, self.seen = None, time.time(), 0

    def epoch_length(self, state):
        start = state.step - state.batch  # the step this epoch began at
        return min((start // self.val_every + 1) * self.val_every, self.steps) - start

    def batches(self, state):
        if self._loader is None:  # one loader for the whole call: its workers live across epochs
            self._loader = iter(torch.utils.data.DataLoader(
                _Batches(self.sampler, self.recipe, state.step, self.steps, self.batch, self.first_seed), batch_size=None,
                num_workers=self.workers, pin_memory=self.device.type == "cuda",
                prefetch_factor=4 if self.workers else None))
        for x, y in self._loader:
            x = x.to(self.device, non_blocking=True)
            if self.recipe.colour_augment:
                x = _colour_augment(x, seed=state.step)
            yield x.to(memory_format=torch.channels_last), y.to(self.device, non_blocking=True)

    def validation(self):
        return (("", self.vx[i:i + 8], self.vy[i:i + 8]) for i in range(0, len(self.vx), 8))

    def calibration(self):
        return (c.to(self.device, memory_format=torch.channels_last) for c in self.calib)

    def done(self, state):
        return state.step >= self.steps

    def on_batch(self, state, loss):
        self.seen += self.batch
        if state.step % 10 == 0:
            self.log(f"step {state.step}/{self.steps} loss {loss:.4f} lr {self.lr_at(state.step):.2e} "
                     f"{self.seen / (time.time() - self.t0):.1f} img/s")
        if state.batch < self.epoch_length(state):  # the last step's row comes with its validation
            self._row(state.step, loss, "")

    def on_epoch(self, state, acc):
        val = acc.mean_dice()
        self.log(f"step {state.step} validation dice {val:.4f}" + (
            " (" + ", ".join(f"{n} {v['dice']:.4f}" for n, v in acc.summary().items()) + ")"
            if len(acc.class_names) > 1 else ""))
        self._row(state.step, state.losses[-1], val)

    def _row(self, step, loss, val):
        self.csv.writerow([step, f"{loss:.5f}", val])
        self.logf.flush()


def _legacy_state(meta: dict) -> TrainState:
    """The state of a checkpoint written before the shared trainer (``{"step", "best"}``)."""
    best = meta["best"]
    return TrainState(step=int(meta["step"]), best_dice=best["dice"], best_step=best["step"],
                      best_metrics={"validation": {n: {"dice": d} for n, d in best.get("classes", {}).items()}})


def train(task="catheter", steps=3000, batch=8, lr=1e-3, ckpt_dir="~/.cache/cardioseg/train",
          out=None, ckpt_every=50, val_every=250, val_frames=24, threads=None, log=print, recipe=None,
          device="cpu", workers=0, version="1.0.0", from_model=None, keep=None):
    """Train ``task``'s model on its generator for ``steps`` steps of ``batch`` frames (Adam,
    ``cosine_lr``, bf16 autocast where it is fast, channels_last), from scratch or, with
    ``from_model``, from that model file's weights with a new schedule (a warm restart: training
    that goes on over several sessions without the checkpoint folder), resuming from
    ``<ckpt_dir>/last.safetensors``; writes ``out`` (model ``version``) if given, with the weights
    of the best validation step (``keep="best"``) or of the last step (``keep="last"``: the end of
    the cosine schedule, as nnU-Net keeps its final checkpoint; a few validation frames of a
    randomised generator choose a step by chance). Returns the best validation ``{"dice", "step",
    "classes": {class: Dice}}``."""
    spec_task = get_task(task)
    recipe = recipe or recipe_for(task, from_model=from_model)
    keep = keep or recipe.keep  # None: the recipe's
    if keep not in KEEP:
        raise InputError(f"--keep {keep}: choose from {', '.join(KEEP)}")
    start, first_seed = None, 0
    if from_model is not None:
        from .outputfiles import output_file

        if out:
            output_file(out, "--out", inputs=[from_model])  # never the model it starts from
        start = load_model(from_model, task=task)
        if (start[1].architecture, start[1].architecture_args) != (recipe.architecture, recipe.architecture_args):
            raise InputError(f"--from-model {from_model} is a {start[1].architecture} network, not the recipe's "
                             f"{recipe.architecture}")
        first_seed = next_seed(start[1].training)  # new frames: the generator's seeds after the earlier run's
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    ckpt_dir = Path(ckpt_dir).expanduser()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(
        task=task, architecture=recipe.architecture, architecture_args=dict(recipe.architecture_args),
        in_channels=spec_task.in_channels, classes=list(spec_task.classes), preprocessing=recipe.preprocessing,
        version=version,
    )
    dev = torch.device(device)
    model = spec.build()
    if start is not None:
        model.load_state_dict(start[0].state_dict())
        log(f"weights: {Path(from_model).name} version {start[1].version}")
    elif recipe.init == "imagenet":
        from .pretrained import load_imagenet_encoder

        log(f"encoder: {load_imagenet_encoder(model)}")
    model = model.to(dev, memory_format=torch.channels_last)
    for m in batchnorm_layers(model):
        m.momentum = 0.1
    lr_at = cosine_lr(lr, steps)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=lr), [c["name"] for c in spec.classes], dev,
                      ckpt_dir, lr_at=lr_at, bf16=True, checkpoint_every=ckpt_every, log=log)
    meta = trainer.resume()
    if meta is not None:
        if "state" not in meta:
            trainer.state = _legacy_state(meta)
        log(f"resumed at step {trainer.state.step}, best {_best(trainer.state)}")
    trainer.state.finished = trainer.state.step >= steps  # a later call may ask for more steps
    with open(ckpt_dir / "log.csv", "a", newline="") as logf:
        source = GeneratorSource(_sampler(spec_task, recipe), recipe, steps, batch, val_every,
                                 val_frames, dev, workers, lr_at=lr_at, log=log, logf=logf, first_seed=first_seed)
        trainer.fit(source)
    if out:
        weights = trainer.load_best() if keep == "best" else trainer.net  # after fit: the last step's
        _write_model(out, weights, spec, spec_task, recipe, trainer.state, steps, batch, lr, val_frames, keep,
                     start=None if start is None else (Path(from_model).name, start[1]), first_seed=first_seed)
        log(f"wrote {out}")
    return _best(trainer.state)


def next_seed(training: dict) -> int:
    """The first generator seed after those a model file's training run used (seeds
    ``first_seed .. first_seed + (steps + 16) * batch - 1``; 16 batches of BatchNorm calibration):
    where a run continuing from it starts, so that it sees new frames."""
    try:
        return int(training.get("first_seed", 0)) + (int(training["steps"]) + 16) * int(training["batch"])
    except (KeyError, TypeError, ValueError):
        raise InputError("--from-model: the model file does not record the generator run it was trained on "
                         "(training steps and batch); train-synthetic continues only its own models") from None


def _best(state: TrainState) -> dict:
    classes = {n: v["dice"] for n, v in state.best_metrics.get("validation", {}).items()}
    return {"dice": float(state.best_dice), "step": state.best_step, **({"classes": classes} if classes else {})}


def _write_model(out, model, spec: ModelSpec, spec_task, recipe: Recipe, state: TrainState, steps, batch, lr,
                 val_frames, keep="best", start=None, first_seed=0) -> None:
    """The model file: the recipe's spec with what the run was (data, device, schedule) and its best Dice;
    ``start``: (file name, spec) of the model the run continued from, whose training and
    initialisation (with its licence) are kept in ``training.continued_from``."""
    pre, dev = recipe.preprocessing, next(model.parameters()).device
    spec.training = {
        "data": f"{spec_task.generator} generator, seeds {first_seed}..{first_seed + (steps + 16) * batch - 1}, "
                f"{pre['size'][0]}x{pre['size'][1]}"
                + (f", runs of kind {recipe.kind}" if recipe.kind != "standard" else "")
                + (f", random flips of axes {list(recipe.flip_dims)}" if recipe.flip_dims else "")
                + (f", colour augmentation ({COLOUR_AUGMENT})" if recipe.colour_augment else ""),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
        "steps": steps, "batch": batch, "optimizer": f"Adam lr {lr} cosine",
        "loss": f"Dice + {'CE' if spec.out_channels > 1 else 'BCE'} (MONAI DiceCELoss)",
        "precision": "bf16 autocast" if bf16_is_fast(dev) else "fp32", "best_step": state.best_step,
        "first_seed": first_seed, "weights": "best validation step" if keep == "best" else "last step",
    }
    if start is not None:
        name, before = start
        spec.training["continued_from"] = {"model": name, "version": before.version, "training": before.training}
        if before.training.get("initialisation"):
            spec.training["initialisation"] = f"{name} version {before.version}, itself from " + \
                before.training["initialisation"]
        else:
            spec.training["initialisation"] = f"{name} version {before.version}"
    elif recipe.init == "imagenet":
        from .pretrained import description, read_info

        spec.training["initialisation"] = description(read_info())
    real = getattr(spec_task.generator_module(), "REAL_IMAGES", {}).get(recipe.kind)
    if real:
        from .realxray import ATTRIBUTION

        spec.training["real_images"] = f"{real}. {ATTRIBUTION}"
    spec.metrics = {"validation_dice": round(state.best_dice, 4), "validation_frames": val_frames}
    if keep == "last" and state.history and state.history[-1].get("val_dice") is not None:
        spec.metrics = {"validation_dice": round(state.history[-1]["val_dice"], 4), "validation_frames": val_frames,
                        "best_validation_dice": round(state.best_dice, 4), "best_validation_step": state.best_step}
    save_model(out, model, spec)
