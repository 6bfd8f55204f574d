"""Train or fine-tune a task's model on a training folder (``cardioseg train``), and evaluate a
model file on one (``cardioseg evaluate``).

Frames are fed exactly as the predictor feeds them: ``normalize_intensity(resize(frame, size))``
with the model's preprocessing; labels are resized with nearest neighbour. Training and
validation are split by source (run), never frames of one run on both sides. The loop is
``Training.trainer.Trainer``'s, fed by ``FolderSource``.

Resumable: every ``checkpoint_every`` batches and after every epoch, the model, the optimiser,
the scheduler, the early-stopping state and the position (epoch, batch) go to
``<ckpt>/last.safetensors`` (safetensors, never pickles); the weights with the best validation
Dice go to ``<ckpt>/best.safetensors``. Random numbers are seeded per sample from (seed, epoch,
position), so a run killed mid-epoch continues exactly like an uninterrupted one (bit-identical
on CPU). Logs: ``log.csv``, ``curves.png`` and TensorBoard events in the checkpoint folder.

Distributed: started by ``torchrun --nproc_per_node N``, each process takes 1/N of every batch
(DDP; gloo on CPU, NCCL on CUDA); process 0 alone logs and writes files.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as T

from . import augment as aug
from .metrics import MetricAccumulator
from .outputfiles import folder_lock, output_file, output_folder
from .modelfile import ModelFileError, ModelSpec, check_task, load_model, read_spec, save_model
from .errors import CardioSegError, InputError
from .preprocess import normalize_intensity, resize, to_lps, whole_tiles
from .tasks import bundled_model_dirs, get_task
from .trainer import Source, Trainer, TrainState, batchnorm_layers, to_labels  # noqa: F401 (to_labels: API)
from .trainingfolder import TrainingFolderError, read_training_folder

# a tile without the object lets RandCropByPosNegLabeld pick anywhere, as OneTile wants
warnings.filterwarnings("ignore", message=".*unable to generate class balanced samples.*")

DEFAULT_CKPT_ROOT = Path("~/.cache/cardioseg/train-runs")
NEW_NETWORK = ("scratch", "imagenet")  # --init values that build a network rather than load one
IMAGENET_ARCH = "unet-efficientnet-lite0"  # --init imagenet without --arch


class TrainingError(CardioSegError):
    """A training run that cannot start or continue: bad data, split, init file or output path."""


@dataclass
class TrainConfig:
    data: str
    task: str = "catheter"
    # "bundled", "scratch" (random weights), "imagenet" (ImageNet encoder weights, Training.pretrained;
    # architecture unet-efficientnet-lite0 unless given) or a model file
    init: str = "bundled"
    architecture: str | None = None  # with init "scratch" or "imagenet": a registry name instead of the bundled one
    epochs: int = 50
    batch: int = 8
    lr: float = 1e-4
    # the encoder's learning rate (None: lr, one rate for all; 0: the encoder's weights stay as they are)
    encoder_lr: float | None = None
    optimizer: str = "adam"  # "adam" | "sgd"
    scheduler: str = "plateau"  # "plateau" (factor 0.2, patience 10) | "cosine"
    plateau_patience: int = 10
    patience: int = 15  # early stopping, epochs without a better validation Dice
    val_fraction: float = 0.2
    seed: int = 0
    augment: dict | None = field(default_factory=aug.default_augment)
    out: str | None = None
    ckpt: str | None = None
    device: str = "cpu"
    checkpoint_every: int = 20  # batches between checkpoints inside an epoch (0: at epoch ends only)
    # "frozen": BatchNorm keeps the starting model's statistics; "update": they follow the training
    # frames and are re-estimated on them after each epoch; "auto": frozen when the starting model's
    # statistics were learnt from data, else update
    batchnorm: str = "auto"

    def check(self) -> None:
        """TrainingError naming the first setting out of its range (as the CLI option)."""
        ints = {"epochs": (self.epochs, 1), "batch": (self.batch, 1), "patience": (self.patience, 1),
                "checkpoint-every": (self.checkpoint_every, 0), "seed": (self.seed, 0)}
        for name, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainingError(f"--{name} {value} must be an integer >= {low}")
        for name, value in (("lr", self.lr), ("encoder-lr", 0 if self.encoder_lr is None else self.encoder_lr)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise TrainingError(f"--{name} {value} must be a number >= 0")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise TrainingError(f"--val-fraction {self.val_fraction} must be in [0, 1)")

    def fingerprint(self, case_ids) -> str:
        """What makes two runs the same run (a checkpoint resumes only a run with this print)."""
        d = {k: getattr(self, k) for k in ("task", "init", "architecture", "epochs", "batch", "lr", "optimizer", "scheduler",
                                           "plateau_patience", "patience", "val_fraction", "seed", "augment",
                                           "batchnorm")}
        if self.encoder_lr is not None:  # unset: the print of runs from before the option, so they resume
            d["encoder_lr"] = self.encoder_lr
        d["data"] = str(Path(self.data).resolve())
        d["cases"] = list(case_ids)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def batchnorm_frozen(mode: str, bns) -> bool:
    """Whether training keeps the BatchNorm statistics of the starting model (layers ``bns``).
    "auto" keeps them when they were learnt from data (some layer has counted batches): a small
    fine-tuning set would otherwise replace statistics estimated on far more frames."""
    if mode not in ("auto", "frozen", "update"):
        raise TrainingError(f"unknown batchnorm mode '{mode}' (auto, frozen or update)")
    if mode == "auto":
        return _learnt_statistics(bns)
    return mode == "frozen" and bool(bns)


def _learnt_statistics(bns) -> bool:
    return any(int(m.num_batches_tracked) > 0 for m in bns if m.num_batches_tracked is not None)


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def check_out_path(out, inputs=()) -> Path:
    """The output model path, checked before training (``outputfiles.output_file``: writable,
    not a folder, not one of ``inputs``); refuses a bundled model's path (never replaced)."""
    p = Path(out).expanduser().resolve()
    if p.parent in bundled_model_dirs():
        raise TrainingError(f"--out {out} is the bundled models' folder or file; a trained model never replaces "
                            "the bundled one: write it elsewhere (default: <data>/models/)")
    if p.is_dir():
        raise TrainingError(f"--out {out} is a folder; give a .safetensors file name")
    try:
        return output_file(p, "--out", inputs=inputs)
    except InputError as e:
        raise TrainingError(str(e)) from None


def split_by_source(sources, val_fraction: float, seed: int) -> tuple[list, list]:
    """Split source names into (train, validation) sets; whole sources only.

    ``val_fraction`` 0 keeps every source for training (no validation). Otherwise at least one
    source is held out and at least one kept. Raises TrainingError with a single source.
    """
    sources = sorted(set(sources))
    if not 0 <= val_fraction < 1:
        raise TrainingError(f"--val-fraction {val_fraction} must be in [0, 1)")
    if val_fraction == 0:
        return sources, []
    if len(sources) < 2:
        raise TrainingError(f"the training folder has frames of a single source ('{sources[0]}'); validation needs "
                            "frames of another run, since frames of one run never go on both sides. Export more runs, "
                            "or pass --val-fraction 0 to train without validation")
    order = np.random.default_rng(seed).permutation(len(sources))
    n_val = min(len(sources) - 1, max(1, round(val_fraction * len(sources))))
    val = sorted(sources[i] for i in order[:n_val])
    return [s for s in sources if s not in val], val


def init_model(cfg: TrainConfig) -> tuple[torch.nn.Module, ModelSpec, str]:
    """(model, spec, description) to start from, per ``cfg.init``."""
    task = get_task(cfg.task)
    if cfg.architecture and cfg.init not in NEW_NETWORK:
        raise TrainingError("--arch chooses the network for --init scratch or imagenet; a model file brings its own")
    if cfg.init in ("bundled", *NEW_NETWORK):
        path = Path(task.bundled_model)
    else:
        path = Path(cfg.init).expanduser()
    try:
        if cfg.init in NEW_NETWORK:
            spec = read_spec(path)
            check_task(path, spec, cfg.task)
            architecture = cfg.architecture or (IMAGENET_ARCH if cfg.init == "imagenet" else None)
            if architecture:
                spec.architecture, spec.architecture_args = architecture, {}
            torch.manual_seed(cfg.seed)
            model = spec.build()
            desc = f"scratch ({spec.architecture}, preprocessing of {path.name})"
            if cfg.init == "imagenet":
                from .pretrained import load_imagenet_encoder

                desc += f", encoder: {load_imagenet_encoder(model)}"
            return model, spec, desc
        model, spec = load_model(path, task=cfg.task)
    except ModelFileError as e:
        raise ModelFileError(f"--init {cfg.init}: {e}") from None
    return model, spec, f"{'bundled ' if cfg.init == 'bundled' else ''}{path.name} version {spec.version}"


def prepare(image: np.ndarray, label: np.ndarray, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """One case -> network input (C, h, w) float32 and label (1, h, w) float32, normalised exactly
    like ``Predictor.predict`` does: at the model size, or at the frame's own size for a tile-mode
    model (training then crops tiles of the model size from it)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    pre = spec.preprocessing
    y = torch.from_numpy(label.astype(np.float32))[None, None]
    if spec.tile_mode:
        return normalize_intensity(x, pre["intensity"])[0].contiguous(), y[0].contiguous()
    x = normalize_intensity(resize(x, pre["size"]), pre["intensity"])[0]
    if tuple(y.shape[-2:]) != tuple(pre["size"]):
        y = F.interpolate(y, size=tuple(pre["size"]), mode="nearest")
    return x.contiguous(), y[0].contiguous()


def _model_orientation(image, label, geometry, spec: ModelSpec, case_id: str):
    """A grey slice and its label in the model's orientation (``preprocessing["orientation"]``,
    "LPS" for CT: as the predictor feeds slices of a volume); unchanged for other models."""
    if spec.preprocessing.get("orientation") != "LPS" or image.ndim != 2:
        return image, label
    try:
        img, lab = to_lps(image[None], geometry["direction"]), to_lps(label[None], geometry["direction"])
    except InputError as e:
        raise TrainingError(f"case {case_id}: {e}") from None
    if img.shape[0] != 1:
        raise TrainingError(f"case {case_id} is not an axial slice, but the model segments axial CT slices")
    return img[0], lab[0]


def _param_groups(cfg: TrainConfig, model) -> list:
    """The model's parameters, the encoder's in a group of its own when ``encoder_lr`` is set
    (discriminative fine-tuning); with 0 the encoder is frozen and left out."""
    encoder = getattr(model, "encoder", None)
    if cfg.encoder_lr is None or encoder is None:
        return [{"params": list(model.parameters()), "lr": cfg.lr}]
    mine = {id(p) for p in encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in mine], "lr": cfg.lr}]
    if cfg.encoder_lr > 0:
        return groups + [{"params": list(encoder.parameters()), "lr": cfg.encoder_lr}]
    encoder.requires_grad_(False)  # no gradients to compute for it either
    return groups


def _optimizer(cfg: TrainConfig, model):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(_param_groups(cfg, model), lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(_param_groups(cfg, model), lr=cfg.lr, momentum=0.9, nesterov=True)
    raise TrainingError(f"unknown optimizer '{cfg.optimizer}' (adam or sgd)")


def _scheduler(cfg: TrainConfig, opt):
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.2, patience=cfg.plateau_patience)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    raise TrainingError(f"unknown scheduler '{cfg.scheduler}' (plateau or cosine)")


@dataclass
class _Run:
    """One ``cardioseg train`` run: how it was called, where it runs, and what ``_train`` gathered."""
    cfg: TrainConfig
    log: Callable[[str], None]
    progress: bool
    rank: int
    world: int
    device: torch.device
    max_epochs: int | None = None  # stop this call after that many epochs / batches
    max_batches: int | None = None
    folder: object = None  # the TrainingFolder
    spec: ModelSpec | None = None
    init_desc: str = ""
    ckpt: Path | None = None
    fingerprint: str = ""
    out: Path | None = None
    stamp: str = ""
    bn_shift: float | None = None  # trainer.batchnorm_shift of the training frames from learnt statistics


def train(cfg: TrainConfig, log: Callable[[str], None] = print, max_epochs_this_run: int | None = None,
          progress: bool = True, max_batches_this_run: int | None = None) -> dict:
    """Run (or resume) training; returns ``{"out": path or None, "epochs": run so far, "finished",
    "best": {...}}``. ``max_epochs_this_run`` / ``max_batches_this_run`` stop this call after that
    many epochs / batches, as an interruption would; the next call resumes."""
    cfg.check()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but no CUDA GPU is available")
    rank, world, device, own_group = _distributed(cfg.device)
    try:
        return _train(_Run(cfg, log if rank == 0 else _silent, progress, rank, world, device, max_epochs_this_run,
                           max_batches_this_run))
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _silent(_message):
    pass


def _distributed(device_kind: str):
    """(rank, world size, device, whether this call started the process group), from torchrun's
    environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT): gloo on CPU, NCCL on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device_kind), False
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if device_kind == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, started


def _train(run: _Run) -> dict:
    """Check the folder, the starting model and every output, then train in the locked checkpoint folder."""
    cfg = run.cfg
    get_task(cfg.task)  # an unknown task is refused before anything is read
    try:
        run.folder = folder = read_training_folder(cfg.data)
    except TrainingFolderError as e:
        raise TrainingError(f"cannot train on {cfg.data}: {e}") from None
    if not folder.cases:
        raise TrainingError(f"the training folder {cfg.data} has no cases; export labelled frames into it first "
                            "(cardioseg export or the module's Export button)")
    if folder.task is not None and folder.task != cfg.task:
        raise TrainingError(f"the training folder {cfg.data} holds '{folder.task}' cases, not '{cfg.task}'")
    run.stamp = _utc_stamp()
    init_file = None if cfg.init in ("bundled", *NEW_NETWORK) else cfg.init
    run.out = check_out_path(cfg.out or Path(cfg.data) / "models" / f"{cfg.task}-{run.stamp}.safetensors",
                             inputs=[init_file])
    model, run.spec, run.init_desc = init_model(cfg)  # its classes and channels are the task's (check_task)
    class_names = [c["name"] for c in run.spec.classes]
    labels = sorted(folder.dataset["labels"].items(), key=lambda kv: kv[1])
    if [name.lower() for name, _ in labels[1:]] != [n.lower() for n in class_names]:
        raise TrainingError(f"the training folder's labels {dict(labels)} do not match the model's classes "
                            f"{class_names} (label 0 background, then the classes in order)")

    run.fingerprint = cfg.fingerprint([c.case_id for c in folder.cases])
    run.ckpt = ckpt = (Path(cfg.ckpt).expanduser() if cfg.ckpt
                       else DEFAULT_CKPT_ROOT.expanduser() / f"{cfg.task}-{run.fingerprint}")
    try:
        output_folder(ckpt, "--ckpt")
    except InputError as e:
        raise TrainingError(str(e)) from None
    with contextlib.ExitStack() as stack:
        if run.rank == 0:  # one run per checkpoint folder; under DDP the processes of one run share it
            stack.enter_context(folder_lock(ckpt, f"another cardioseg train is using the checkpoint folder {ckpt}; "
                                                  "wait for it to end or pass another --ckpt", TrainingError))
        return _train_in(run, model)


def _train_in(run: _Run, model) -> dict:
    """The run in its (locked) checkpoint folder: split, load the cases, train."""
    cfg, folder, spec = run.cfg, run.folder, run.spec
    train_src, val_src = split_by_source([c.source for c in folder.cases], cfg.val_fraction, cfg.seed)
    if not val_src:
        run.log("validation: none (--val-fraction 0): every source trains; the last epoch's weights are kept")
    run.log(f"split by source: train {train_src}, validation {val_src}")

    train_set, val_set = [], []
    for c in folder.cases:
        image, label, geometry = folder.load(c.case_id)
        image, label = _model_orientation(image, label, geometry, spec, c.case_id)
        if c.source in val_src:
            x, _ = prepare(image, label, spec)
            val_set.append((c.case_id, x, label))
        else:
            train_set.append((c.case_id, *prepare(image, label, spec)))

    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run(run, model, FolderSource(run, train_set, val_set), (train_src, val_src))
    finally:
        torch.use_deterministic_algorithms(previous_det)


class OneTile(T.Compose):
    """Tile-mode training: one tile of the model's size from a frame at its own resolution (padded
    with zeros when smaller), centred on the object or anywhere with even odds, as nnU-Net
    oversamples foreground (MONAI ``RandCropByPosNegLabeld``). A Compose, so that
    ``set_random_state`` seeds the crop; returns the one sample, not a list of one."""

    def __init__(self, size):
        keys = ["image", "label"]
        super().__init__([T.SpatialPadd(keys, size), T.RandCropByPosNegLabeld(keys, "label", size, pos=1, neg=1,
                                                                              num_samples=1)])

    def __call__(self, data):
        return super().__call__(data)[0]


def _sample_seed(*parts) -> int:
    """A seed for one sample or batch, from (run seed, epoch, position, ...): the same wherever
    the run is resumed, and the same split over any number of processes."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class FolderSource(Source):
    """Feeds the Trainer from a training folder's cases, prepared as the predictor feeds them.

    ``train_set``: (case id, x (C, h, w), y (1, h, w)); ``val_set``: (case id, x, label (H, W)
    at the frame's size). Each epoch visits the training cases in an order seeded by (seed,
    epoch); each sample's augmentation is seeded by (seed, epoch, position), so a resumed
    epoch repeats exactly; under DDP each process takes the samples k % world == rank of a batch.
    """

    def __init__(self, run: _Run, train_set: list, val_set: list):
        self.run, self.cfg, self.train_set, self.val_set = run, run.cfg, train_set, val_set
        self.writer = None  # _TensorBoard of process 0, set by _run
        self.curves_at = None  # when the checkpoint folder's curves.png was last drawn

    def epoch_length(self, state):
        return math.ceil(len(self.train_set) / self.cfg.batch)

    def batches(self, state):
        cfg, rank, world, epoch = self.cfg, self.run.rank, self.run.world, state.epoch + 1
        augment = aug.build_augment(cfg.augment)
        crop = OneTile(tuple(self.run.spec.preprocessing["size"])) if self.run.spec.tile_mode else None
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.train_set))
        for b in range(state.batch, self.epoch_length(state)):
            idx = order[b * cfg.batch:(b + 1) * cfg.batch]
            mine = [k for k in range(len(idx)) if k % world == rank] or [rank % len(idx)]
            pairs = []
            for k in mine:  # augmentation seeded per sample: resumable, and the same on any world size
                sample = self.train_set[idx[k]][1:]
                if crop is not None:
                    crop.set_random_state(seed=_sample_seed(cfg.seed, epoch, b * cfg.batch + k, 2) % 2**32)
                    sample = aug.apply(crop, *sample)
                if augment is not None:
                    augment.set_random_state(seed=_sample_seed(cfg.seed, epoch, b * cfg.batch + k) % 2**32)
                pairs.append(aug.apply(augment, *sample))
            torch.manual_seed(_sample_seed(cfg.seed, epoch, b, rank, 1))  # dropout, drop-connect
            yield (torch.stack([p[0] for p in pairs]).to(self.run.device, memory_format=torch.channels_last),
                   torch.stack([p[1] for p in pairs]).to(self.run.device))

    def validation(self):
        return ((cid, x[None].to(self.run.device), label) for cid, x, label in self.val_set)

    def calibration(self):
        if self.run.spec.tile_mode:  # every whole tile of every training frame
            size = self.run.spec.preprocessing["size"]
            tiles = torch.cat([whole_tiles(t[1][None], size) for t in self.train_set])
            return (b.to(self.run.device) for b in torch.split(tiles, self.cfg.batch))
        return (torch.stack([t[1] for t in self.train_set[i:i + self.cfg.batch]]).to(self.run.device)
                for i in range(0, len(self.train_set), self.cfg.batch))

    def done(self, state):
        return state.epoch >= self.cfg.epochs

    def on_epoch(self, state, acc):
        h = state.history[-1]
        self.run.log(f"epoch {h['epoch']}/{self.cfg.epochs}: train loss {h['train_loss']:.4f}"
                     + ("" if h["val_dice"] is None else f", validation Dice {h['val_dice']:.4f} (best "
                                                         f"{state.best_dice:.4f} at epoch {state.best_epoch})")
                     + f", lr {h['lr']:.3g}")
        if self.writer is not None:  # before the checkpoint: a resume purges what the checkpoint lacks
            self.writer.add_epoch(h)
            # drawing the PNG takes ~1 s, longer than a small folder's epoch: at most every CURVES_EVERY_S
            due = self.curves_at is None or time.monotonic() - self.curves_at >= CURVES_EVERY_S
            write_history(self.run.ckpt, state.history, curves=due)
            if due:
                self.curves_at = time.monotonic()


def _run(run: _Run, model, source: FolderSource, split: tuple[list, list]) -> dict:
    """Train (or resume) in the checkpoint folder, then write the model file (process 0)."""
    cfg, log = run.cfg, run.log
    # channels_last: 1.29x per training step on 2 AVX2 cores (README; make bench, training section)
    model = model.to(run.device, memory_format=torch.channels_last)
    bns = batchnorm_layers(model)
    bn_frozen = batchnorm_frozen(cfg.batchnorm, bns)
    if _learnt_statistics(bns) and source.train_set:  # recorded, for the choice of --batchnorm (README)
        from .trainer import batchnorm_shift

        run.bn_shift = batchnorm_shift(model, source.calibration())  # the starting model's: the same on a resume
        log(f"BatchNorm: the training frames' statistics are {run.bn_shift:.3f} from the model's "
            f"(trainer.batchnorm_shift); {'kept' if bn_frozen else 'updated on the training frames'}")
    for m in bns:  # EfficientNet's BN momentum (0.01) lags behind fine-tuning
        m.momentum = 0.1
    opt = _optimizer(cfg, model)
    trainer = Trainer(model, opt, [c["name"] for c in run.spec.classes], run.device, run.ckpt,
                      scheduler=_scheduler(cfg, opt), bn_frozen=bn_frozen, patience=cfg.patience,
                      threshold=float(run.spec.preprocessing.get("threshold", 0.5)),
                      checkpoint_every=cfg.checkpoint_every, rank=run.rank, world=run.world,
                      meta={"fingerprint": run.fingerprint}, log=log, progress=run.progress, epochs=cfg.epochs,
                      state=TrainState(stamp=run.stamp),
                      window=run.spec.preprocessing["size"] if run.spec.tile_mode else None)

    def same_run(meta):
        if meta.get("fingerprint") != run.fingerprint:
            raise TrainingError(f"{trainer.last} is the checkpoint of another run (other data or settings); "
                                "pass another --ckpt folder, or delete it to start afresh")

    if trainer.resume(same_run) is not None:
        st = trainer.state
        log(f"{trainer.last}: that run had finished; writing its model again" if st.finished else
            f"resumed from {trainer.last}: epoch {st.epoch + 1}, after batch {st.batch}")
    if run.world > 1:
        log(f"distributed: {run.world} processes, each takes 1/{run.world} of every batch of {cfg.batch}")
    source.writer = _TensorBoard(run.ckpt / "tensorboard", purge_step=trainer.state.epoch + 1) if run.rank == 0 else None
    try:
        finished = trainer.fit(source, run.max_epochs, run.max_batches)
    finally:
        if source.writer is not None:
            source.writer.close()
    st = trainer.state
    if not finished or run.rank != 0:
        return {"out": None, "epochs": st.epoch, "finished": finished, "ckpt": str(run.ckpt),
                **({"rank": run.rank} if finished else {})}
    _write_model(run, trainer, source, split, bn_frozen if bns else None)
    shutil.copyfile(run.out.with_suffix(".curves.png"), run.ckpt / "curves.png")  # the whole run, drawn once
    return {"out": str(run.out), "epochs": st.epoch, "finished": True, "ckpt": str(run.ckpt),
            "best": {"dice": st.best_dice, "epoch": st.best_epoch}}


def _write_model(run: _Run, trainer: Trainer, source: FolderSource, split, bn_frozen: bool | None) -> None:
    """The best weights as a model file at ``run.out`` (a new version; training record and metrics)."""
    cfg, spec, st = run.cfg, run.spec, trainer.state
    model = trainer.load_best().cpu().eval()
    out_spec = ModelSpec(**{**spec.__dict__})
    base = spec.version.split("+")[0]
    out_spec.version = f"{base}+{'train' if cfg.init in NEW_NETWORK else 'ft'}.{st.stamp}"
    n_train, n_val = len(source.train_set), len(source.val_set)
    out_spec.training = {
        "data": str(Path(cfg.data).resolve()), "cases": n_train + n_val,
        "train_cases": n_train, "validation_cases": n_val,
        "split": {"by": "source", "train_sources": split[0], "validation_sources": split[1]},
        "init": run.init_desc, "epochs_run": st.epoch, "epochs": cfg.epochs, "best_epoch": st.best_epoch,
        "early_stopped": st.epoch < cfg.epochs, "batch": cfg.batch, "optimizer": f"{cfg.optimizer} lr {cfg.lr}"
        + ("" if cfg.encoder_lr is None else f", encoder lr {cfg.encoder_lr}"),
        "scheduler": cfg.scheduler,
        "loss": "Dice + BCE (MONAI DiceCELoss)" if spec.out_channels == 1 else "Dice + CE (MONAI DiceCELoss)",
        "augment": cfg.augment, "seed": cfg.seed, "dataset": run.folder.dataset.get("name", ""),
        "processes": run.world, "history": st.history,
        "batchnorm": "none in this network" if bn_frozen is None else
                     "frozen: the starting model's statistics" if bn_frozen else
                     "updated: re-estimated on the training frames after each epoch",
        "batchnorm_shift": run.bn_shift,
    }
    if cfg.init == "imagenet":
        from .pretrained import description, read_info

        out_spec.training["initialisation"] = description(read_info())
    out_spec.metrics = st.best_metrics or {"note": "no validation (--val-fraction 0)"}
    run.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(run.out, model, out_spec)
    curves = write_curves(run.out.with_suffix(".curves.png"), st.history)
    run.log(f"wrote {run.out} (version {out_spec.version}) and {curves.name}; log.csv, curves.png, TensorBoard "
            f"logs and checkpoints in {run.ckpt}")


HISTORY_FIELDS = ("epoch", "train_loss", "val_dice", "lr", "seconds")
CURVES_EVERY_S = 30.0  # seconds between redrawings of the checkpoint folder's curves.png


def write_history(ckpt: Path, history: list, curves: bool = True) -> None:
    """log.csv (and, with ``curves``, curves.png) of the run so far, rewritten whole from the
    checkpointed history (so a crash never leaves a duplicated or missing epoch in them)."""
    tmp = ckpt / "log.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, HISTORY_FIELDS)
        w.writeheader()
        w.writerows({k: ("" if h[k] is None else h[k]) for k in HISTORY_FIELDS} for h in history)
    os.replace(tmp, ckpt / "log.csv")
    if curves:
        write_curves(ckpt / "curves.png", history)


def write_curves(path: Path, history: list) -> Path:
    """Training loss, validation Dice and learning rate per epoch, as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3), dpi=100, layout="constrained")
    ax = fig.subplots(1, 3)
    ax[0].plot(epochs, [h["train_loss"] for h in history], marker=".")
    ax[0].set(title="training loss", xlabel="epoch")
    val = [(h["epoch"], h["val_dice"]) for h in history if h["val_dice"] is not None]
    if val:
        ax[1].plot(*zip(*val), marker=".", color="tab:green")
    ax[1].set(title="validation Dice", xlabel="epoch", ylim=(0, 1))
    lrs = [h["lr"] for h in history]
    (ax[2].semilogy if min(lrs, default=0) > 0 else ax[2].plot)(epochs, lrs, marker=".", color="tab:orange")
    ax[2].set(title="learning rate", xlabel="epoch")
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


class _TensorBoard:
    """Per-epoch scalars for TensorBoard (``tensorboard --logdir <ckpt>/tensorboard``). After a resume,
    events of epochs after the checkpoint (written before a crash) are dropped (purge_step)."""

    def __init__(self, folder: Path, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(folder), purge_step=purge_step if purge_step > 1 else None)

    def add_epoch(self, h: dict) -> None:
        self.w.add_scalar("loss/train", h["train_loss"], h["epoch"])
        if h["val_dice"] is not None:
            self.w.add_scalar("dice/validation", h["val_dice"], h["epoch"])
        self.w.add_scalar("lr", h["lr"], h["epoch"])
        self.w.flush()

    def close(self) -> None:
        self.w.close()


# --------------------------------------------------------------------------- evaluate


def evaluate(model_path, data, device="cpu", progress=None, precision="auto") -> tuple[list, dict, list]:
    """Predict every case of a training folder with ``Predictor``; returns (rows, summary, classes):
    rows ``(case_id, source, {class: {"dice","iou","accuracy"}})``, summary per class (pooled,
    with ``mean_case_dice``)."""
    from .predictor import Predictor

    try:
        folder = read_training_folder(data)
    except TrainingFolderError as e:
        raise TrainingError(f"cannot evaluate on {data}: {e}") from None
    if not folder.cases:
        raise TrainingError(f"the training folder {data} has no cases")
    p = Predictor(model_path, task=folder.task, device=device, precision=precision)
    names = [c["name"] for c in p.spec.classes]
    acc = MetricAccumulator(names)
    rows = []
    for i, c in enumerate(folder.cases):
        image, label, geometry = folder.load(c.case_id)
        pred = p.predict(image, direction=geometry["direction"], slices=True)[0]
        rows.append((c.case_id, c.source, acc.add(pred, label, c.case_id)))
        if progress:
            progress(i + 1, len(folder.cases))
    return rows, acc.summary(), names


def format_tables(rows, summary, names) -> str:
    lines = [f"{'case':<32} {'source':<20} " + " ".join(f"{n[:10] + ' ' + m:>16}" for n in names
                                                          for m in ("Dice", "IoU", "acc"))]
    for cid, src, m in rows:
        lines.append(f"{cid:<32} {src[:20]:<20} " + " ".join(f"{m[n][k]:>16.4f}" for n in names
                                                             for k in ("dice", "iou", "accuracy")))
    lines += ["", f"{'class':<16} {'Dice':>8} {'IoU':>8} {'accuracy':>9} {'mean case Dice':>15} (over {len(rows)} cases)"]
    for n in names:
        s = summary[n]
        lines.append(f"{n:<16} {s['dice']:>8.4f} {s['iou']:>8.4f} {s['accuracy']:>9.4f} {s['mean_case_dice']:>15.4f}")
    return "\n".join(lines)


CSV_HEADER = ("case", "source", "class", "dice", "iou", "accuracy")


def check_csv_path(path, data, model) -> Path:
    """The ``evaluate --csv`` report path, checked before evaluating: writable, not the model,
    not inside the training folder being read, and either new or a previous report (its first
    line is ``CSV_HEADER``): any other existing file is kept and refused."""
    path = output_file(path, "--csv", inputs=[model], input_folders=[data])
    if path.exists():
        try:
            with open(path, newline="") as f:
                first = next(csv.reader(f), None)
        except (OSError, UnicodeDecodeError, csv.Error):
            first = None
        if tuple(first or ()) != CSV_HEADER:
            raise InputError(f"--csv {path} exists and is not a CardioSeg evaluation report; it is kept: "
                             "choose another name")
    return path


def write_csv(path, rows, summary, names) -> Path:
    """Write the per-case and summary metrics (atomically: temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_HEADER)
            for cid, src, m in rows:
                for n in names:
                    w.writerow([cid, src, n, f"{m[n]['dice']:.6f}", f"{m[n]['iou']:.6f}", f"{m[n]['accuracy']:.6f}"])
            for n in names:
                w.writerow(["ALL", "", n, f"{summary[n]['dice']:.6f}", f"{summary[n]['iou']:.6f}",
                            f"{summary[n]['accuracy']:.6f}"])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
