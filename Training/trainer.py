"""One training loop for both ways of training: ``cardioseg train`` (a training folder,
``Training.train``) and ``cardioseg train-synthetic`` (a generator, ``Training.synthetic_train``).

``Trainer`` owns what they share: the optimiser step with the loss, the epoch loop, BatchNorm
handling (frozen layers, re-estimated statistics), validation, best-model saving, early stopping,
the learning-rate schedule, the history, checkpoint and resume. A ``Source`` feeds it: the
batches of an epoch, the validation cases, the calibration batches, and what to report.

Why not MONAI's ``SupervisedTrainer``: it is an Ignite engine (``monai.engines`` needs
``pytorch-ignite``), which is not installed and not a dependency of CardioSeg; and what the
runs need most would be custom handlers anyway: resume in the middle of an epoch, bit-identical
on CPU (per-sample seeds, the position in a safetensors checkpoint), each DDP process's share
of every batch, a step-based schedule for the generator and an epoch-based one for folders.
"""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import MetricAccumulator
from .preprocess import tiled_logits


@dataclass
class TrainState:
    """Where a run stands; saved whole (as JSON) in every checkpoint."""
    epoch: int = 0  # finished epochs
    batch: int = 0  # batches done in the next epoch
    step: int = 0  # batches done in all (the synthetic run's step)
    losses: list = field(default_factory=list)  # training loss of each batch of the epoch so far
    best_dice: float = -1.0  # best validation Dice (mean over classes)
    best_epoch: int = 0  # epoch and step of best_dice (without validation: the last epoch)
    best_step: int = -1
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    best_metrics: dict = field(default_factory=dict)
    finished: bool = False
    stamp: str = ""  # UTC time the run started
    history: list = field(default_factory=list)  # one row per epoch (HISTORY_FIELDS of Training.train)


def batchnorm_layers(model: torch.nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def bf16_is_fast(device) -> bool:
    """Whether bf16 autocast speeds ``device`` up: CUDA, or a CPU with bf16 instructions
    (AVX512-BF16, AMX). Elsewhere (e.g. AVX2-only CPUs) bf16 convolutions are emulated and many
    times slower than fp32."""
    return torch.device(device).type == "cuda" or _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def recalibrate_batchnorm(model, batches, momentum=0.1):
    """Re-estimate BatchNorm running statistics with the current weights (no gradient).

    EfficientNet's BN momentum (0.01) lets eval-mode statistics lag far behind fast-moving
    weights; this makes eval mode match the trained weights before validating or exporting.
    Only the BatchNorm layers run in training mode, so the result does not depend on the RNG.
    ``batches``: network inputs (B, C, H, W) on the model's device.
    """
    bns = batchnorm_layers(model)
    model.eval()  # dropout and drop-connect off: the statistics must be those of eval-mode activations
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    with torch.no_grad():
        for x in batches:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16_is_fast(x.device)):
                model(x)
    for m in bns:
        m.momentum = momentum
    model.eval()


def batchnorm_shift(model, batches) -> float:
    """How far the statistics of ``batches`` (network inputs) are from those the model's BatchNorm
    layers hold: per layer and channel, the distance between the two normal distributions in
    units of the stored spread, |mean difference| / stored std + |log of the std ratio|,
    averaged over channels and layers. 0 for the frames the statistics came from. The model is
    left as it was."""
    bns = batchnorm_layers(model)
    if not bns:
        return 0.0
    saved = [(m.running_mean.clone(), m.running_var.clone(),
              None if m.num_batches_tracked is None else m.num_batches_tracked.clone(), m.momentum, m.training)
             for m in bns]
    was_training = model.training
    recalibrate_batchnorm(model, batches)
    per_layer = []
    for m, (mean, var, _n, _mom, _tr) in zip(bns, saved):
        std, new_std = (var + m.eps).sqrt(), (m.running_var + m.eps).sqrt()
        per_layer.append(float(((m.running_mean - mean).abs() / std + (new_std / std).log().abs()).mean()))
    model.train(was_training)
    for m, (mean, var, n, momentum, training) in zip(bns, saved):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        if n is not None:
            m.num_batches_tracked.copy_(n)
        m.momentum = momentum
        m.train(training)
    return float(np.mean(per_layer))


def segmentation_loss(n_out: int):
    """MONAI DiceCELoss: Dice + BCE on 1 output channel (sigmoid), Dice + CE on more (softmax,
    label k is channel k). Called as ``loss(logits (B, K, H, W), target (B, 1, H, W))``."""
    from monai.losses import DiceCELoss

    if n_out == 1:
        return DiceCELoss(sigmoid=True, batch=True)
    return DiceCELoss(softmax=True, to_onehot_y=True, batch=True)


def to_labels(logits: torch.Tensor, size, threshold: float = 0.5) -> np.ndarray:
    """(B, K, h, w) logits -> (B, H, W) uint8 labels, as the predictor makes them."""
    up = logits if tuple(logits.shape[-2:]) == tuple(size) else F.interpolate(
        logits, size=tuple(size), mode="bilinear", align_corners=False)
    if logits.shape[1] == 1:
        return (up[:, 0] > math.log(threshold / (1 - threshold))).to(torch.uint8).cpu().numpy()
    return up.argmax(1).to(torch.uint8).cpu().numpy()


def all_mean(value: float, world: int) -> float:
    """The mean of ``value`` over the ``world`` processes of a DDP run."""
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


class Source:
    """What feeds a Trainer. Tensors come on the trainer's device."""

    def epoch_length(self, state: TrainState) -> int:
        """Batches in the epoch after ``state.epoch`` (``state.batch`` of them done)."""
        raise NotImplementedError

    def batches(self, state: TrainState) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x (B, C, H, W) float, y (B, 1, H, W) float labels) from batch ``state.batch`` of the
        epoch on; read lazily (the trainer may stop before the end)."""
        raise NotImplementedError

    def validation(self) -> Iterable[tuple[str, torch.Tensor, np.ndarray]]:
        """(case id, x (B, C, h, w), labels (H, W) or (B, H, W) uint8); none: no validation."""
        return ()

    def calibration(self) -> Iterable[torch.Tensor]:
        """Inputs (B, C, H, W) to re-estimate BatchNorm statistics on."""
        return ()

    def done(self, state: TrainState) -> bool:
        """Whether every epoch of the run is done."""
        raise NotImplementedError

    def on_batch(self, state: TrainState, loss: float) -> None:
        """After each optimiser step (``state`` counts it)."""

    def on_epoch(self, state: TrainState, acc: MetricAccumulator | None) -> None:
        """After validation, the best model and the history row of the epoch, before the checkpoint."""


class Trainer:
    """Trains ``model`` (its outputs: ``class_names``, plus background if more than one) with
    ``opt`` on a Source; checkpoints to ``<ckpt>/last.safetensors``,
    the best weights to ``<ckpt>/best.safetensors`` (process 0 alone writes).

    ``scheduler``: stepped after each epoch (ReduceLROnPlateau on the validation Dice, or on
    minus the training loss without validation). ``lr_at(step)``: the learning rate of each step
    instead. ``patience``: early stopping after that many epochs without a better Dice.
    ``bf16``: autocast forward passes. ``meta``: saved in each checkpoint (e.g. a fingerprint).
    ``window``: validation cases are whole frames, seen in overlapping tiles of this size (tile mode).
    """

    def __init__(self, model, opt, class_names, device, ckpt: Path, *, scheduler=None, lr_at=None,
                 bn_frozen=False, patience=None, threshold=0.5, bf16=False, checkpoint_every=0, rank=0, world=1,
                 meta=None, log=print, progress=False, epochs=None, state: TrainState | None = None, window=None):
        self.net = self.model = model  # net: the plain module (validation, statistics, saving)
        self.opt, self.class_names, self.device = opt, list(class_names), torch.device(device)
        self.n_out = len(self.class_names) + 1 if len(self.class_names) > 1 else 1
        self.loss_fn = segmentation_loss(self.n_out)
        self.last, self.best_path = Path(ckpt) / "last.safetensors", Path(ckpt) / "best.safetensors"
        self.scheduler, self.lr_at, self.patience, self.threshold = scheduler, lr_at, patience, threshold
        self.bns = batchnorm_layers(model)
        self.bn_frozen, self.bf16, self.checkpoint_every = bn_frozen, bf16, checkpoint_every
        self.rank, self.world, self.meta, self.log = rank, world, dict(meta or {}), log
        self.progress, self.epochs = progress, epochs
        self.window = window  # tile-mode models: validate with tiles of this size at the frame's resolution
        self.state = state or TrainState()
        self._ran = 0  # batches run by this call

    @property
    def bn_training(self) -> bool:
        """Whether BatchNorm statistics follow the training batches."""
        return bool(self.bns) and not self.bn_frozen

    def _autocast(self):  # bf16 only where it is fast (bf16_is_fast): elsewhere fp32
        return (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 and bf16_is_fast(self.device)
                else contextlib.nullcontext())

    # ------------------------------------------------------------------ checkpoint, resume, best

    def checkpoint(self) -> None:
        if self.rank == 0:
            meta = {**self.meta, "state": asdict(self.state)}
            if self.scheduler is not None:
                meta["scheduler"] = self.scheduler.state_dict()
            save_checkpoint(self.last, self.net, self.opt, meta)

    def resume(self, check: Callable[[dict], None] | None = None) -> dict | None:
        """Load the last checkpoint if there is one (weights, optimiser; then, after ``check(meta)``
        has accepted it, state and scheduler); returns its metadata."""
        if not self.last.exists():
            return None
        meta = load_checkpoint(self.last, self.net, self.opt)
        if check is not None:
            check(meta)
        if "state" in meta:
            self.state = TrainState(**{**asdict(self.state), **meta["state"]})
        if self.scheduler is not None and "scheduler" in meta:
            self.scheduler.load_state_dict(meta["scheduler"])
        return meta

    def save_best(self) -> None:
        if self.rank == 0:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(self.best_path))

    def load_best(self) -> torch.nn.Module:
        """The plain model with the best weights."""
        self.net.load_state_dict(load_file(str(self.best_path), device=str(next(self.net.parameters()).device)))
        return self.net

    # ------------------------------------------------------------------ step, validate

    def train_mode(self) -> None:
        self.model.train()
        for m in self.bns if self.bn_frozen else ():
            m.eval()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on x (B, C, H, W), y (B, 1, H, W); the loss, averaged over processes."""
        if x.shape[0] == 1 and self.bn_training:
            x, y = torch.cat([x, x]), torch.cat([y, y])  # BatchNorm needs 2 samples
        if self.lr_at is not None:
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.state.step)
        with self._autocast():
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y if self.n_out > 1 else (y > 0).float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return all_mean(float(loss.item()), self.world)

    def validate(self, cases) -> MetricAccumulator | None:
        """Metrics of the plain model on ``Source.validation`` cases; None without cases."""
        acc = None
        self.net.eval()
        with torch.inference_mode(), self._autocast():
            for cid, x, labels in cases:
                logits = (self.net(x) if self.window is None else tiled_logits(x, self.window, 8, self.net)).float()
                pred = to_labels(logits, labels.shape[-2:], self.threshold).reshape(labels.shape)
                acc = MetricAccumulator(self.class_names) if acc is None else acc
                acc.add(pred, labels, cid)
        return acc

    # ------------------------------------------------------------------ epochs

    def fit(self, source: Source, max_epochs: int | None = None, max_batches: int | None = None) -> bool:
        """Train until ``source.done`` (or early stopping); False when this call stopped earlier,
        after ``max_epochs`` epochs or ``max_batches`` batches (the checkpoint holds the position)."""
        self._wrap()
        ran_epochs = 0
        while not self.state.finished:
            if max_epochs is not None and ran_epochs >= max_epochs:
                self.log(f"stopped after epoch {self.state.epoch} (resume with the same command)")
                return False
            if not self._epoch(source, max_batches):
                return False
            ran_epochs += 1
        return True

    def _wrap(self) -> None:
        if self.world > 1 and self.model is self.net:
            from torch.nn.parallel import DistributedDataParallel

            # SMP's EfficientNet encoders keep a few layers the U-Net never uses
            self.model = DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda"
                                                 else None, find_unused_parameters=True)

    def _epoch(self, source: Source, max_batches) -> bool:
        """The (rest of the) next epoch; False when stopped after ``max_batches`` batches of this call."""
        from tqdm import tqdm

        st, t0 = self.state, time.time()
        epoch, n = st.epoch + 1, source.epoch_length(st)
        self.train_mode()
        bar = tqdm(total=n, initial=st.batch, desc=f"epoch {epoch}/{self.epochs}", unit="batch", file=sys.stderr,
                   disable=None if (self.progress and self.rank == 0) else True, leave=False)
        batches = iter(source.batches(st))
        try:
            while st.batch < n:
                if max_batches is not None and self._ran >= max_batches:
                    self.checkpoint()
                    self.log(f"stopped in epoch {epoch} after batch {st.batch} (resume with the same command)")
                    return False
                loss = self.step(*next(batches))
                st.losses.append(loss)
                st.batch, st.step, self._ran = st.batch + 1, st.step + 1, self._ran + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                source.on_batch(st, loss)
                if self.checkpoint_every and st.batch % self.checkpoint_every == 0 and st.batch < n:
                    self.checkpoint()
        except KeyboardInterrupt:
            self.checkpoint()
            self.log(f"interrupted in epoch {epoch} after batch {st.batch}; resume with the same command")
            raise
        finally:
            bar.close()
        self._end_epoch(source, t0)
        return True

    def _end_epoch(self, source: Source, t0: float) -> None:
        """Statistics, validation, best model, schedule, history, early stopping, checkpoint."""
        st = self.state
        epoch, train_loss = st.epoch + 1, float(np.mean(st.losses))
        if self.bn_training:
            recalibrate_batchnorm(self.net, source.calibration())
        acc = self.validate(source.validation())
        val_dice = None if acc is None else acc.mean_dice()
        if val_dice is None or val_dice > st.best_dice:
            if val_dice is not None:
                st.best_dice, st.bad_epochs = val_dice, 0
                st.best_metrics = {"validation": acc.summary(), "validation_dice": val_dice,
                                   "validation_cases": len(acc.cases)}
            st.best_epoch, st.best_step = epoch, st.step
            self.save_best()
        else:
            st.bad_epochs += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(-train_loss if val_dice is None else val_dice)
        elif self.scheduler is not None:
            self.scheduler.step()
        st.history.append({"epoch": epoch, "train_loss": train_loss, "val_dice": val_dice,
                           "lr": self.opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)})
        source.on_epoch(st, acc)
        st.epoch, st.batch, st.losses = epoch, 0, []
        if val_dice is not None and self.patience is not None and st.bad_epochs >= self.patience:
            self.log(f"early stopping: no better validation Dice for {self.patience} epochs")
            st.finished = True
        st.finished = st.finished or source.done(st)
        self.checkpoint()
