"""Train or fine-tune a task's model on a training folder (``cardioseg train``), and evaluate a
model file on one (``cardioseg evaluate``).

Frames are fed exactly as the predictor feeds them: ``normalize_intensity(resize(frame, size))``
with the model's preprocessing; labels are resized with nearest neighbour. Training and
validation are split by source (run), never frames of one run on both sides.

Resumable: after every epoch the model, the optimiser, the scheduler, the early-stopping state
and the epoch go to ``<ckpt>/last.safetensors`` (safetensors, never pickles); the weights with the
best validation Dice go to ``<ckpt>/best.safetensors``. Random numbers are drawn from generators
seeded by (seed, epoch) at the start of each epoch, so a resumed run continues exactly like an
uninterrupted one (bit-identical on CPU).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
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
from .modelfile import ModelFileError, ModelSpec, load_model, read_spec, save_model
from .preprocess import normalize_intensity, resize
from .synthetic_train import recalibrate_batchnorm
from .tasks import TASKS, get_task
from .trainingfolder import TrainingFolderError, read_training_folder

DEFAULT_CKPT_ROOT = Path("~/.cache/cardioseg/train-runs")


class TrainingError(ValueError):
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

    def fingerprint(self, case_ids) -> str:
        """What makes two runs the same run (a checkpoint resumes only a run with this print)."""
        d = {k: getattr(self, k) for k in ("task", "init", "architecture", "epochs", "batch", "lr", "optimizer", "scheduler",
                                           "plateau_patience", "patience", "val_fraction", "seed", "augment")}
        d["data"] = str(Path(self.data).resolve())
        d["cases"] = list(case_ids)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _bundled_paths() -> list[Path]:
    return [Path(t.bundled_model).resolve() for t in TASKS.values()]


def check_out_path(out, task: str) -> Path:
    """The output model path; refuses a bundled model's path (it is never replaced)."""
    p = Path(out).expanduser().resolve()
    if p in _bundled_paths() or p.parent == Path(get_task(task).bundled_model).resolve().parent:
        raise TrainingError(f"--out {out} is the bundled models' folder or file; a trained model never replaces "
                            "the bundled one: write it elsewhere (default: <data>/models/)")
    if p.is_dir():
        raise TrainingError(f"--out {out} is a folder; give a .safetensors file name")
    return p


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
        raise ValueError("--arch chooses the network for --init scratch; a model file brings its own")
    if cfg.init in ("bundled", "scratch"):
        path = Path(task.bundled_model)
    else:
        path = Path(cfg.init).expanduser()
    try:
        if cfg.init == "scratch":
            spec = read_spec(path)
            if spec.task != cfg.task:
                raise ModelFileError(f"{path.name} is a model for task '{spec.task}', not '{cfg.task}'")
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
          progress: bool = True) -> dict:
    """Run (or resume) training; returns ``{"out": path or None, "epochs": run so far, "finished",
    "best": {...}}``. ``max_epochs_this_run`` stops after that many epochs of this call (as an
    interruption would; the next call resumes)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but no CUDA GPU is available")
    device = torch.device(cfg.device)
    task = get_task(cfg.task)
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
    out = check_out_path(cfg.out or Path(cfg.data) / "models" / f"{cfg.task}-{stamp}.safetensors", cfg.task)
    model, spec, init_desc = init_model(cfg)
    if len(spec.classes) != len(task.classes):
        raise ModelFileError(f"--init model has {len(spec.classes)} classes; task '{cfg.task}' has {len(task.classes)}")
    class_names = [c["name"] for c in spec.classes]
    n_labels = len(folder.dataset["labels"])
    if n_labels - 1 != len(class_names):
        raise TrainingError(f"the training folder's labels {folder.dataset['labels']} do not match the model's "
                            f"classes {class_names}")

    ids = [c.case_id for c in folder.cases]
    fp = cfg.fingerprint(ids)
    ckpt = Path(cfg.ckpt).expanduser() if cfg.ckpt else DEFAULT_CKPT_ROOT.expanduser() / f"{cfg.task}-{fp}"
    ckpt.mkdir(parents=True, exist_ok=True)
    train_src, val_src = split_by_source([c.source for c in folder.cases], cfg.val_fraction, cfg.seed)
    if not val_src:
        log("validation: none (--val-fraction 0): every source trains; the last epoch's weights are kept")
    log(f"split by source: train {train_src}, validation {val_src}")

    train_set, val_set = [], []
    for c in folder.cases:
        image, label, _ = folder.load(c.case_id)
        if c.source in val_src:
            x, _ = prepare(image, label, spec)
            val_set.append((c.case_id, x, label))
        else:
            train_set.append((c.case_id, *prepare(image, label, spec)))

    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run(cfg, model, spec, init_desc, train_set, val_set, train_src, val_src, class_names, ckpt, fp,
                    out, stamp, device, log, max_epochs_this_run, progress, folder)
    finally:
        torch.use_deterministic_algorithms(previous_det)


def _run(cfg, model, spec, init_desc, train_set, val_set, train_src, val_src, class_names, ckpt, fp, out, stamp,
         device, log, max_epochs_this_run, progress, folder):
    from tqdm import tqdm

    model = model.to(device)
    for m in model.modules():  # EfficientNet's BN momentum (0.01) lags behind fine-tuning
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    opt = _optimizer(cfg, model.parameters())
    sched = _scheduler(cfg, opt)
    n_out = len(class_names) if len(class_names) == 1 else len(class_names) + 1
    loss_fn = _loss(n_out)
    state = {"epoch": 0, "best_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "best_metrics": {},
             "finished": False, "stamp": stamp}
    last, best_path = ckpt / "last.safetensors", ckpt / "best.safetensors"
    if last.exists():
        meta = load_checkpoint(last, model, opt)
        if meta.get("fingerprint") != fp:
            raise TrainingError(f"{last} is the checkpoint of another run (other data or settings); "
                                "pass another --ckpt folder, or delete it to start afresh")
        state = meta["state"]
        sched.load_state_dict(meta["scheduler"])
        if state["finished"]:
            log(f"{last}: that run had finished; writing its model again")
        else:
            log(f"resumed from {last} after epoch {state['epoch']}")
    log_path = ckpt / "log.csv"
    new_log = not log_path.exists()
    run_epochs = 0
    with open(log_path, "a", newline="") as logf:
        writer = csv.writer(logf)
        if new_log:
            writer.writerow(["epoch", "train_loss", "val_dice", "lr", "seconds"])
        while not state["finished"] and state["epoch"] < cfg.epochs:
            if max_epochs_this_run is not None and run_epochs >= max_epochs_this_run:
                log(f"stopped after epoch {state['epoch']} (resume with the same command)")
                return {"out": None, "epochs": state["epoch"], "finished": False, "ckpt": str(ckpt)}
            epoch = state["epoch"] + 1
            t0 = time.time()
            seed = [cfg.seed, epoch]
            torch.manual_seed(int(np.random.default_rng(seed).integers(2**62)))
            rng = np.random.default_rng(seed)
            augment = aug.build_augment(cfg.augment, seed=int(rng.integers(2**31)))
            order = rng.permutation(len(train_set))
            model.train()
            losses = []
            batches = range(0, len(order), cfg.batch)
            bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", file=sys.stderr,
                       disable=None if progress else True, leave=False)
            for start in bar:
                idx = order[start:start + cfg.batch]
                pairs = [aug.apply(augment, train_set[i][1], train_set[i][2]) for i in idx]
                x = torch.stack([p[0] for p in pairs]).to(device)
                y = torch.stack([p[1] for p in pairs]).to(device)
                if len(idx) == 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                    x, y = torch.cat([x, x]), torch.cat([y, y])  # BatchNorm needs 2 samples
                logits = model(x)
                loss = loss_fn(logits.float(), y if n_out > 1 else (y > 0).float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.item()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.close()
            train_loss = float(np.mean(losses))
            val_dice = ""
            improved = False
            if val_set:
                recalibrate_batchnorm(model, (torch.stack([t[1] for t in train_set[i:i + cfg.batch]]).to(device)
                                              for i in range(0, len(train_set), cfg.batch)))
                acc = _validate(model, val_set, spec, class_names, device)
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
                recalibrate_batchnorm(model, (torch.stack([t[1] for t in train_set[i:i + cfg.batch]]).to(device)
                                              for i in range(0, len(train_set), cfg.batch)))
                improved = True
                state.update(best_epoch=epoch)
                metric = -train_loss
            if improved:
                save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                          str(best_path))
            if cfg.scheduler == "plateau":
                sched.step(metric)
            else:
                sched.step()
            lr = opt.param_groups[0]["lr"]
            writer.writerow([epoch, f"{train_loss:.6f}", "" if val_dice == "" else f"{val_dice:.6f}", f"{lr:.3g}",
                             f"{time.time() - t0:.1f}"])
            logf.flush()
            log(f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}"
                + ("" if val_dice == "" else f", validation Dice {val_dice:.4f} (best {state['best_dice']:.4f} "
                                             f"at epoch {state['best_epoch']})") + f", lr {lr:.3g}")
            state["epoch"] = epoch
            run_epochs += 1
            if val_set and state["bad_epochs"] >= cfg.patience:
                log(f"early stopping: no better validation Dice for {cfg.patience} epochs")
                state["finished"] = True
            if state["epoch"] >= cfg.epochs:
                state["finished"] = True
            save_checkpoint(last, model, opt, {"fingerprint": fp, "state": state, "scheduler": sched.state_dict()})

    model.load_state_dict(load_file(str(best_path)))
    model = model.cpu().eval()
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
    }
    out_spec.metrics = state["best_metrics"] or {"note": "no validation (--val-fraction 0)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, model, out_spec)
    log(f"wrote {out} (version {out_spec.version}); checkpoints and log.csv in {ckpt}")
    return {"out": str(out), "epochs": state["epoch"], "finished": True, "ckpt": str(ckpt),
            "best": {"dice": state["best_dice"], "epoch": state["best_epoch"]}}


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
        image, label, _ = folder.load(c.case_id)
        pred = p.predict(image)[0]
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


def write_csv(path, rows, summary, names) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "source", "class", "dice", "iou", "accuracy"])
        for cid, src, m in rows:
            for n in names:
                w.writerow([cid, src, n, f"{m[n]['dice']:.6f}", f"{m[n]['iou']:.6f}", f"{m[n]['accuracy']:.6f}"])
        for n in names:
            w.writerow(["ALL", "", n, f"{summary[n]['dice']:.6f}", f"{summary[n]['iou']:.6f}",
                        f"{summary[n]['accuracy']:.6f}"])
    return path
