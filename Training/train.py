"""Train or fine-tune a task's model on a training folder (``cardioseg train``), and evaluate a
model file on one (``cardioseg evaluate``).

Frames are fed exactly as the predictor feeds them: ``normalize_intensity(resize(frame, size))``
with the model's preprocessing; labels are resized with nearest neighbour. Training and
validation are split by source (run), never frames of one run on both sides.

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
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import augment as aug
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import MetricAccumulator
from .outputfiles import folder_lock, output_file, output_folder
from .modelfile import ModelFileError, ModelSpec, check_task, load_model, read_spec, save_model
from .errors import CardioSegError, InputError
from .preprocess import normalize_intensity, resize, to_lps
from .synthetic_train import recalibrate_batchnorm
from .tasks import bundled_model_dirs, get_task
from .trainingfolder import TrainingFolderError, read_training_folder

DEFAULT_CKPT_ROOT = Path("~/.cache/cardioseg/train-runs")


class TrainingError(CardioSegError):
    """A training run that cannot start or continue: bad data, split, init file or output path."""


@dataclass
class TrainConfig:
    data: str
    task: str = "catheter"
    init: str = "bundled"  # "bundled", "scratch" or a model file
    architecture: str | None = None  # with init "scratch": a registry name instead of the bundled one
    epochs: int = 50
    batch: int = 8
    lr: float = 1e-4
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
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise TrainingError(f"--lr {self.lr} must be a number >= 0")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise TrainingError(f"--val-fraction {self.val_fraction} must be in [0, 1)")

    def fingerprint(self, case_ids) -> str:
        """What makes two runs the same run (a checkpoint resumes only a run with this print)."""
        d = {k: getattr(self, k) for k in ("task", "init", "architecture", "epochs", "batch", "lr", "optimizer", "scheduler",
                                           "plateau_patience", "patience", "val_fraction", "seed", "augment",
                                           "batchnorm")}
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
        return any(int(m.num_batches_tracked) > 0 for m in bns if m.num_batches_tracked is not None)
    return mode == "frozen" and bool(bns)


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
    if cfg.architecture and cfg.init != "scratch":
        raise TrainingError("--arch chooses the network for --init scratch; a model file brings its own")
    if cfg.init in ("bundled", "scratch"):
        path = Path(task.bundled_model)
    else:
        path = Path(cfg.init).expanduser()
    try:
        if cfg.init == "scratch":
            spec = read_spec(path)
            check_task(path, spec, cfg.task)
            if cfg.architecture:
                spec.architecture, spec.architecture_args = cfg.architecture, {}
            torch.manual_seed(cfg.seed)
            return spec.build(), spec, f"scratch ({spec.architecture}, preprocessing of {path.name})"
        model, spec = load_model(path, task=cfg.task)
    except ModelFileError as e:
        raise ModelFileError(f"--init {cfg.init}: {e}") from None
    return model, spec, f"{'bundled ' if cfg.init == 'bundled' else ''}{path.name} version {spec.version}"


def prepare(image: np.ndarray, label: np.ndarray, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """One case -> network input (C, h, w) float32 and label (1, h, w) float32 at the model size,
    normalised exactly like ``Predictor.predict`` does."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    pre = spec.preprocessing
    x = normalize_intensity(resize(x, pre["size"]), pre["intensity"])[0]
    y = torch.from_numpy(label.astype(np.float32))[None, None]
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


def to_labels(logits: torch.Tensor, size, threshold: float = 0.5) -> np.ndarray:
    """(B, K, h, w) logits -> (B, H, W) uint8 labels, as the predictor makes them."""
    up = logits if tuple(logits.shape[-2:]) == tuple(size) else F.interpolate(
        logits, size=tuple(size), mode="bilinear", align_corners=False)
    if logits.shape[1] == 1:
        return (up[:, 0] > math.log(threshold / (1 - threshold))).to(torch.uint8).cpu().numpy()
    return up.argmax(1).to(torch.uint8).cpu().numpy()


def _loss(n_out: int):
    from monai.losses import DiceCELoss

    if n_out == 1:
        return DiceCELoss(sigmoid=True, batch=True)  # Dice + BCE
    return DiceCELoss(softmax=True, to_onehot_y=True, batch=True)  # Dice + CE


def _optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)
    raise TrainingError(f"unknown optimizer '{cfg.optimizer}' (adam or sgd)")


def _scheduler(cfg: TrainConfig, opt):
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.2, patience=cfg.plateau_patience)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    raise TrainingError(f"unknown scheduler '{cfg.scheduler}' (plateau or cosine)")


def _validate(model, val, spec, class_names, device) -> MetricAccumulator:
    acc = MetricAccumulator(class_names)
    threshold = float(spec.preprocessing.get("threshold", 0.5))
    model.eval()
    with torch.inference_mode():
        for cid, x, label in val:
            logits = model(x[None].to(device)).float()
            acc.add(to_labels(logits, label.shape, threshold)[0], label, cid)
    return acc


def train(cfg: TrainConfig, log: Callable[[str], None] = print, max_epochs_this_run: int | None = None,
          progress: bool = True, max_batches_this_run: int | None = None) -> dict:
    """Run (or resume) training; returns ``{"out": path or None, "epochs": run so far, "finished",
    "best": {...}}``. ``max_epochs_this_run`` / ``max_batches_this_run`` stop this call after that
    many epochs / batches, as an interruption would; the next call resumes."""
    cfg.check()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but no CUDA GPU is available")
    rank, world, device, own_group = _distributed(cfg.device)
    if rank != 0:
        log = _silent
    try:
        return _train(cfg, log, max_epochs_this_run, progress, max_batches_this_run, rank, world, device)
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


def _train(cfg, log, max_epochs_this_run, progress, max_batches_this_run, rank, world, device):
    get_task(cfg.task)  # an unknown task is refused before anything is read
    try:
        folder = read_training_folder(cfg.data)
    except TrainingFolderError as e:
        raise TrainingError(f"cannot train on {cfg.data}: {e}") from None
    if not folder.cases:
        raise TrainingError(f"the training folder {cfg.data} has no cases; export labelled frames into it first "
                            "(cardioseg export or the module's Export button)")
    if folder.task is not None and folder.task != cfg.task:
        raise TrainingError(f"the training folder {cfg.data} holds '{folder.task}' cases, not '{cfg.task}'")
    stamp = _utc_stamp()
    init_file = None if cfg.init in ("bundled", "scratch") else cfg.init
    out = check_out_path(cfg.out or Path(cfg.data) / "models" / f"{cfg.task}-{stamp}.safetensors", inputs=[init_file])
    model, spec, init_desc = init_model(cfg)  # its classes and channels are the task's (check_task)
    class_names = [c["name"] for c in spec.classes]
    labels = sorted(folder.dataset["labels"].items(), key=lambda kv: kv[1])
    if [name.lower() for name, _ in labels[1:]] != [n.lower() for n in class_names]:
        raise TrainingError(f"the training folder's labels {dict(labels)} do not match the model's classes "
                            f"{class_names} (label 0 background, then the classes in order)")

    ids = [c.case_id for c in folder.cases]
    fp = cfg.fingerprint(ids)
    ckpt = Path(cfg.ckpt).expanduser() if cfg.ckpt else DEFAULT_CKPT_ROOT.expanduser() / f"{cfg.task}-{fp}"
    try:
        output_folder(ckpt, "--ckpt")
    except InputError as e:
        raise TrainingError(str(e)) from None
    with contextlib.ExitStack() as stack:
        if rank == 0:  # one run per checkpoint folder; under DDP the processes of one run share it
            stack.enter_context(folder_lock(ckpt, f"another cardioseg train is using the checkpoint folder {ckpt}; "
                                                  "wait for it to end or pass another --ckpt", TrainingError))
        return _train_in(cfg, folder, spec, model, init_desc, class_names, ckpt, fp, out, stamp, device, log,
                         max_epochs_this_run, progress, rank, world, max_batches_this_run)


def _train_in(cfg, folder, spec, model, init_desc, class_names, ckpt, fp, out, stamp, device, log,
              max_epochs_this_run, progress, rank, world, max_batches_this_run):
    """The run in its (locked) checkpoint folder: split, load the cases, train."""
    train_src, val_src = split_by_source([c.source for c in folder.cases], cfg.val_fraction, cfg.seed)
    if not val_src:
        log("validation: none (--val-fraction 0): every source trains; the last epoch's weights are kept")
    log(f"split by source: train {train_src}, validation {val_src}")

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
        return _run(cfg, model, spec, init_desc, train_set, val_set, train_src, val_src, class_names, ckpt, fp,
                    out, stamp, device, log, max_epochs_this_run, progress, folder, rank, world, max_batches_this_run)
    finally:
        torch.use_deterministic_algorithms(previous_det)


def _sample_seed(*parts) -> int:
    """A seed for one sample or batch, from (run seed, epoch, position, ...): the same wherever
    the run is resumed, and the same split over any number of processes."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _all_mean(value: float, world: int) -> float:
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


def _run(cfg, model, spec, init_desc, train_set, val_set, train_src, val_src, class_names, ckpt, fp, out, stamp,
         device, log, max_epochs_this_run, progress, folder, rank=0, world=1, max_batches_this_run=None):
    from tqdm import tqdm

    model = model.to(device)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    bn_frozen = batchnorm_frozen(cfg.batchnorm, bns)
    for m in bns:  # EfficientNet's BN momentum (0.01) lags behind fine-tuning
        m.momentum = 0.1
    opt = _optimizer(cfg, model.parameters())
    sched = _scheduler(cfg, opt)
    n_out = spec.out_channels
    loss_fn = _loss(n_out)
    # epoch: finished epochs; batch, losses: progress inside the next one; history: one row per epoch
    state = {"epoch": 0, "batch": 0, "losses": [], "best_dice": -1.0, "best_epoch": 0, "bad_epochs": 0,
             "best_metrics": {}, "finished": False, "stamp": stamp, "history": []}
    last, best_path = ckpt / "last.safetensors", ckpt / "best.safetensors"
    if last.exists():
        meta = load_checkpoint(last, model, opt)
        if meta.get("fingerprint") != fp:
            raise TrainingError(f"{last} is the checkpoint of another run (other data or settings); "
                                "pass another --ckpt folder, or delete it to start afresh")
        state = {**state, **meta["state"]}
        sched.load_state_dict(meta["scheduler"])
        if state["finished"]:
            log(f"{last}: that run had finished; writing its model again")
        else:
            log(f"resumed from {last}: epoch {state['epoch'] + 1}, after batch {state['batch']}")
    net = model  # the plain module: validation, BN recalibration and saving
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # SMP's EfficientNet encoders keep a few layers the U-Net never uses
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
        log(f"distributed: {world} processes, each takes 1/{world} of every batch of {cfg.batch}")
    writer = _TensorBoard(ckpt / "tensorboard", purge_step=state["epoch"] + 1) if rank == 0 else None

    def save_last():
        if rank == 0:
            save_checkpoint(last, net, opt, {"fingerprint": fp, "state": state, "scheduler": sched.state_dict()})

    n_batches = math.ceil(len(train_set) / cfg.batch)
    run_epochs = run_batches = 0
    try:
        while not state["finished"] and state["epoch"] < cfg.epochs:
            if max_epochs_this_run is not None and run_epochs >= max_epochs_this_run:
                log(f"stopped after epoch {state['epoch']} (resume with the same command)")
                return {"out": None, "epochs": state["epoch"], "finished": False, "ckpt": str(ckpt)}
            epoch = state["epoch"] + 1
            t0 = time.time()
            augment = aug.build_augment(cfg.augment)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_set))
            model.train()
            for m in bns if bn_frozen else ():
                m.eval()
            bar = tqdm(total=n_batches, initial=state["batch"], desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                       file=sys.stderr, disable=None if (progress and rank == 0) else True, leave=False)
            try:
                for b in range(state["batch"], n_batches):
                    if max_batches_this_run is not None and run_batches >= max_batches_this_run:
                        save_last()
                        log(f"stopped in epoch {epoch} after batch {b} (resume with the same command)")
                        return {"out": None, "epochs": state["epoch"], "finished": False, "ckpt": str(ckpt)}
                    idx = order[b * cfg.batch:(b + 1) * cfg.batch]
                    mine = [k for k in range(len(idx)) if k % world == rank] or [rank % len(idx)]
                    pairs = []
                    for k in mine:  # augmentation seeded per sample: resumable, and the same on any world size
                        if augment is not None:
                            augment.set_random_state(seed=_sample_seed(cfg.seed, epoch, b * cfg.batch + k) % 2**32)
                        pairs.append(aug.apply(augment, *train_set[idx[k]][1:]))
                    torch.manual_seed(_sample_seed(cfg.seed, epoch, b, rank, 1))  # dropout, drop-connect
                    x = torch.stack([p[0] for p in pairs]).to(device)
                    y = torch.stack([p[1] for p in pairs]).to(device)
                    if len(mine) == 1 and bns and not bn_frozen:
                        x, y = torch.cat([x, x]), torch.cat([y, y])  # BatchNorm needs 2 samples
                    loss = loss_fn(model(x).float(), y if n_out > 1 else (y > 0).float())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    state["losses"].append(_all_mean(float(loss.item()), world))
                    state["batch"] = b + 1
                    run_batches += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{state['losses'][-1]:.4f}")
                    if cfg.checkpoint_every and state["batch"] % cfg.checkpoint_every == 0 and state["batch"] < n_batches:
                        save_last()
            except KeyboardInterrupt:
                save_last()
                log(f"interrupted in epoch {epoch} after batch {state['batch']}; resume with the same command")
                raise
            finally:
                bar.close()
            train_loss = float(np.mean(state["losses"]))
            val_dice = None
            if bns and not bn_frozen:
                recalibrate_batchnorm(net, (torch.stack([t[1] for t in train_set[i:i + cfg.batch]]).to(device)
                                            for i in range(0, len(train_set), cfg.batch)))
            if val_set:
                acc = _validate(net, val_set, spec, class_names, device)
                val_dice = acc.mean_dice()
                improved = val_dice > state["best_dice"]
                if improved:
                    state.update(best_dice=val_dice, best_epoch=epoch, bad_epochs=0,
                                 best_metrics={"validation": acc.summary(), "validation_dice": val_dice,
                                               "validation_cases": len(val_set)})
                else:
                    state["bad_epochs"] += 1
                metric = val_dice
            else:
                improved = True
                state.update(best_epoch=epoch)
                metric = -train_loss
            if improved and rank == 0:
                save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(best_path))
            if cfg.scheduler == "plateau":
                sched.step(metric)
            else:
                sched.step()
            lr = opt.param_groups[0]["lr"]
            state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_dice": val_dice, "lr": lr,
                                     "seconds": round(time.time() - t0, 1)})
            log(f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}"
                + ("" if val_dice is None else f", validation Dice {val_dice:.4f} (best {state['best_dice']:.4f} "
                                               f"at epoch {state['best_epoch']})") + f", lr {lr:.3g}")
            state.update(epoch=epoch, batch=0, losses=[])
            run_epochs += 1
            if val_set and state["bad_epochs"] >= cfg.patience:
                log(f"early stopping: no better validation Dice for {cfg.patience} epochs")
                state["finished"] = True
            if state["epoch"] >= cfg.epochs:
                state["finished"] = True
            if rank == 0:  # before the checkpoint: a resume purges what the checkpoint lacks
                writer.add_epoch(state["history"][-1])
                write_history(ckpt, state["history"])
            save_last()
    finally:
        if writer is not None:
            writer.close()

    if rank != 0:
        return {"out": None, "epochs": state["epoch"], "finished": True, "ckpt": str(ckpt), "rank": rank}
    net.load_state_dict(load_file(str(best_path)))
    model = net.cpu().eval()
    out_spec = ModelSpec(**{**spec.__dict__})
    base = spec.version.split("+")[0]
    out_spec.version = f"{base}+{'train' if cfg.init == 'scratch' else 'ft'}.{state['stamp']}"
    out_spec.training = {
        "data": str(Path(cfg.data).resolve()), "cases": len(train_set) + len(val_set),
        "train_cases": len(train_set), "validation_cases": len(val_set),
        "split": {"by": "source", "train_sources": train_src, "validation_sources": val_src},
        "init": init_desc, "epochs_run": state["epoch"], "epochs": cfg.epochs, "best_epoch": state["best_epoch"],
        "early_stopped": state["epoch"] < cfg.epochs, "batch": cfg.batch, "optimizer": f"{cfg.optimizer} lr {cfg.lr}",
        "scheduler": cfg.scheduler, "loss": "Dice + BCE (MONAI DiceCELoss)" if n_out == 1 else "Dice + CE (MONAI DiceCELoss)",
        "augment": cfg.augment, "seed": cfg.seed, "dataset": folder.dataset.get("name", ""),
        "processes": world, "history": state["history"],
        "batchnorm": ("frozen: the starting model's statistics" if bn_frozen else
                      "updated: re-estimated on the training frames after each epoch") if bns else "none in this network",
    }
    out_spec.metrics = state["best_metrics"] or {"note": "no validation (--val-fraction 0)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, model, out_spec)
    curves = write_curves(out.with_suffix(".curves.png"), state["history"])
    log(f"wrote {out} (version {out_spec.version}) and {curves.name}; log.csv, curves.png, TensorBoard logs "
        f"and checkpoints in {ckpt}")
    return {"out": str(out), "epochs": state["epoch"], "finished": True, "ckpt": str(ckpt),
            "best": {"dice": state["best_dice"], "epoch": state["best_epoch"]}}


HISTORY_FIELDS = ("epoch", "train_loss", "val_dice", "lr", "seconds")


def write_history(ckpt: Path, history: list) -> None:
    """log.csv and curves.png of the run so far, rewritten whole from the checkpointed history
    (so a crash never leaves a duplicated or missing epoch in them)."""
    tmp = ckpt / "log.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, HISTORY_FIELDS)
        w.writeheader()
        w.writerows({k: ("" if h[k] is None else h[k]) for k in HISTORY_FIELDS} for h in history)
    os.replace(tmp, ckpt / "log.csv")
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
