"""The segmentation tasks: classes, input channels and preprocessing of each.

Terminology strings use Slicer's serialisation:
``context~category(scheme^code^meaning)~type~typeModifier~anatomicContext~region~regionModifier``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError

# fine-tuning on a user's few reviewed frames (`cardioseg adapt`, the modules' Adapt button, and
# adapt-bench's "defaults"): `cardioseg train` settings, chosen with `cardioseg adapt-bench` (README)
ADAPT_SETTINGS = {"epochs": 20, "lr": 1e-4, "encoder_lr": None, "batchnorm": "auto"}


def _models_dir(module: str) -> Path:
    """Bundled models: <module>/Resources/Models in the source tree; Resources/Models beside the
    Training folder when CMake has installed it next to the modules."""
    root = Path(__file__).resolve().parent.parent
    installed = root / "Resources" / "Models"
    return installed if installed.is_dir() else root / module / "Resources" / "Models"


MODELS_DIR = _models_dir("CatheterSeg")
HEART_MODELS_DIR = _models_dir("HeartSeg")

_PHYSICAL_OBJECT = "SCT^260787004^Physical object"
_ANATOMY = "SCT^123037004^Anatomical Structure"


def terminology(category: str, type_: str) -> str:
    return (
        f"Segmentation category and type - 3D Slicer General Anatomy list~{category}~{type_}~^^~"
        "Anatomic codes - DICOM master list~^^~^^"
    )


PREPROCESSING = {"size": [256, 256], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5}, "threshold": 0.5}


@dataclass(frozen=True)
class Recipe:
    """How a task's bundled model is trained on its generator (``cardioseg train-synthetic``):
    the network and the preprocessing written into the model file, and the augmentation.
    ``flip_dims``: random flips of these axes of (B, C, H, W), the orientations the task meets;
    ``colour_augment``: the training folder's colour transforms (``Training.augment``);
    ``kind``: the generator's kind of run the training frames are drawn from;
    ``init``: "random" weights, or "imagenet" encoder weights (``Training.pretrained``; the
    architecture must have them, e.g. unet-efficientnet-lite0); ``keep``: the weights written, of
    the "best" validation step or the "last" step."""

    architecture: str
    architecture_args: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=lambda: dict(PREPROCESSING))
    flip_dims: tuple = (2, 3)
    colour_augment: bool = False
    init: str = "random"
    kind: str = "standard"  # the kind of generated run training frames come from
    keep: str = "best"


def _default_score_line(r: dict) -> str:
    return (f"Dice {r['dice']:.4f} on {r['runs']} generated runs x {r['frames']} frames of kind {r['kind']}; "
            f"worst run {r['min_run_dice']:.4f}")


@dataclass(frozen=True)
class Task:
    """Everything about one task, in one record (``register_task`` adds one; ``TASKS`` holds them).

    stress: the module of its stress suite: ``KINDS``, optional ``NEGATIVE_KINDS`` (nothing to find)
        and ``score_cases`` as the generator's, on images made unlike the generator's.
    generator: the module of its generator (imported only when used), which defines ``KINDS``
        (the kinds of generated run, "standard" first), ``training_frames(seeds, size)``,
        ``sample_run(seed, n_frames, size, kind) -> (frames, masks, info)`` (info may give
        ``spacing`` (z, y, x) mm) and ``score_cases(predictor, seed, runs, frames, size, kind)``
        yielding (prediction, truth, extra) per run.
    recipe: how the bundled model trains on that generator.
    score_extras(r, extras, pooled): fields a score adds or overrides (``dice``, the headline).
    score_line(r): the sentence ``cardioseg score`` prints and the model card shows.
    measure(labels (K, H, W), spacing_zyx, classes) -> dict, and measure_lines(dict) -> lines:
        what HeartSeg and ``cardioseg segment`` report (volumes, LV area); None for none.
    """

    name: str
    in_channels: int
    channel_names: tuple  # one per input channel, as nnU-Net's dataset.json names them
    classes: tuple  # foreground classes: dicts with name, color, terminology
    bundled_model: Path
    description: str
    # check_input(frames (T, H, W), slices): raises InputError naming the problem; slices=True when
    # the frames are independent 2D cases (a training folder), not one input
    check_input: Callable | None = None
    frame_words: tuple = ("frame", "frames")  # what one slice of an input is called, singular and plural
    generator: str = ""
    stress: str = ""  # the module of its stress suite (``KINDS``, ``score_cases``), never trained on
    generated: str = ""  # what the generator makes, for model cards
    recipe: Recipe | None = None
    card_kinds: tuple = ("standard",)
    score_extras: Callable | None = None
    score_line: Callable = _default_score_line
    measure: Callable | None = None
    measure_lines: Callable | None = None

    def generator_module(self):
        """The generator's module; InputError if the task has none."""
        if not self.generator:
            raise InputError(f"task '{self.name}' has no generator")
        return importlib.import_module(self.generator)

    def stress_module(self):
        """The stress suite's module; InputError if the task has none."""
        if not self.stress:
            raise InputError(f"task '{self.name}' has no stress suite")
        return importlib.import_module(self.stress)

    @property
    def kinds(self) -> tuple:
        return tuple(getattr(self.generator_module(), "KINDS", ("standard",))) if self.generator else ()


AIR_HU = -100  # any chest CT has air (about -1000 HU) below this; echo and X-ray values never go below 0


def _value_range(frames: np.ndarray) -> tuple[float, float]:
    return float(frames.min()), float(frames.max())


def check_ct(frames: np.ndarray, slices: bool = False) -> None:
    """A 3D CT in Hounsfield units (or, with ``slices``, axial CT slices): more than one slice,
    and air in it."""
    if frames.ndim != 3 or (frames.shape[0] < 2 and not slices):
        raise InputError(f"the heart-ct task segments 3D CT volumes, but this input is a single 2D image "
                         f"({frames.shape[-1]}x{frames.shape[-2]}); load the whole CT series")
    lo, hi = _value_range(frames)
    if lo > AIR_HU:
        raise InputError(f"values range from {lo:g} to {hi:g} with nothing below {AIR_HU} HU, so this is not a CT "
                         "in Hounsfield units (air is -1000 HU); for echo frames use the echo task")


def check_echo(frames: np.ndarray, slices: bool = False) -> None:
    """Grey ultrasound frames, 8-bit intensities (0-255)."""
    lo, hi = _value_range(frames)
    if lo < AIR_HU:
        raise InputError(f"values go down to {lo:g}, like a CT in Hounsfield units; the echo task expects "
                         "ultrasound frames with grey values 0-255 (use the heart-ct task for CT)")
    if hi > 1023:
        raise InputError(f"values go up to {hi:g}; the echo task expects 8-bit grey ultrasound frames (0-255)")


def check_colour(frames: np.ndarray, slices: bool = False) -> None:
    """Colour video frames (T, H, W, 3), 8-bit RGB values."""
    lo, hi = _value_range(frames)
    if lo < 0 or hi > 255:
        raise InputError(f"values range from {lo:g} to {hi:g}; the instruments task expects 8-bit RGB video "
                         "frames (0-255)")
    if frames.dtype.kind == "f" and hi <= 1.0:
        raise InputError(f"values range from {lo:g} to {hi:g}, colour scaled to 0-1; the instruments task "
                         "expects 8-bit RGB values 0-255: multiply by 255")


def detect_task(frames: np.ndarray, modality: str | None = None) -> tuple[str, str]:
    """HeartSeg's task for an input: ("heart-ct" or "echo", the reason). ``modality`` is the DICOM
    Modality (0008,0060) when known. Raises InputError when neither fits."""
    modality = (modality or "").strip().upper()
    if modality == "CT":
        return "heart-ct", "DICOM modality CT"
    if modality == "US":
        return "echo", "DICOM modality US (ultrasound)"
    if frames.ndim == 4:
        raise InputError(f"colour frames ({frames.shape[-1]} components): HeartSeg's tasks expect grey CT or echo")
    lo, hi = _value_range(frames)
    if lo <= AIR_HU:
        return "heart-ct", f"values from {lo:g} to {hi:g}: Hounsfield units with air, a CT"
    if hi <= 1023:
        return "echo", f"values from {lo:g} to {hi:g}: grey ultrasound, {frames.shape[0]} frames"
    raise InputError(f"values from {lo:g} to {hi:g} are neither CT (Hounsfield units, air at -1000) nor 8-bit "
                     "echo; choose the task by hand")


def _ct_extras(r, extras, pooled) -> dict:
    err = [abs(e["predicted_ml"] - e["heart_ml"]) / e["heart_ml"] for e in extras]
    return {"dice": r["mean_run_dice"], "mean_volume_error": float(np.mean(err)), "max_volume_error": float(np.max(err))}


def _ct_line(r) -> str:
    return (f"mean volume Dice {r['dice']:.4f} (worst {r['min_run_dice']:.4f}) on {r['runs']} generated CT volumes; "
            f"heart volume error {100 * r['mean_volume_error']:.1f} % mean, {100 * r['max_volume_error']:.1f} % worst")


def _echo_extras(r, extras, pooled) -> dict:
    return {"ed_correct": sum(e["ed_ok"] for e in extras), "es_correct": sum(e["es_ok"] for e in extras)}


def _echo_line(r) -> str:
    return (f"Dice {', '.join(f'{n} {v:.4f}' for n, v in r['classes'].items())} on {r['runs']} generated clips x "
            f"{r['frames']} frames; ED frame right in {r['ed_correct']} of {r['runs']} clips, ES in {r['es_correct']}")


def _instruments_extras(r, extras, pooled) -> dict:
    inst = next(iter(pooled.values()))  # pixel accuracy flatters small objects: mostly background is right anyway
    return {"iou": inst["iou"], "accuracy": inst["accuracy"]}


def _instruments_line(r) -> str:
    return (f"Instrument Dice {r['dice']:.4f}, IoU {r['iou']:.4f}, pixel accuracy {r['accuracy']:.4f} (flattered by "
            f"the background) on {r['runs']} generated videos x {r['frames']} frames of kind {r['kind']}; worst "
            f"video with instruments Dice {r['min_run_dice']:.4f}; {r['empty_runs']} videos without instruments, "
            f"{r['empty_run_false_pixels']} pixels labelled in them")


def _measure(name):
    """A function of Training.measure, imported when called (tasks.py stays light)."""
    def call(*args, **kwargs):
        from . import measure

        return getattr(measure, name)(*args, **kwargs)

    return call


TASKS = {
    "catheter": Task(
        name="catheter",
        in_channels=1,
        channel_names=("fluoroscopy",),
        classes=(
            {
                "name": "Catheter",
                "color": [1.0, 0.85, 0.1],
                "terminology": terminology(_PHYSICAL_OBJECT, "SCT^19923001^Catheter"),
            },
        ),
        bundled_model=MODELS_DIR / "catheter_unet_lite0.safetensors",
        description="catheters and guidewires in grey X-ray fluoroscopy frames",
        generator="Training.fluoro",
        stress="Training.stress_catheter",
        generated="fluoroscopy",
        # ImageNet Lite0 encoder, randomised runs (30 % on real radiographs), tiles at native resolution
        recipe=Recipe("unet-efficientnet-lite0", {}, {**PREPROCESSING, "mode": "tile"}, init="imagenet",
                      kind="randomised"),
    ),
    "heart-ct": Task(
        name="heart-ct",
        in_channels=1,
        channel_names=("CT",),
        classes=(
            {"name": "Heart", "color": [0.81, 0.43, 0.33], "terminology": terminology(_ANATOMY, "SCT^80891009^Heart")},
        ),
        bundled_model=HEART_MODELS_DIR / "heart_ct_unet.safetensors",
        description="the whole heart in chest CT (Hounsfield units), axial slice by slice",
        check_input=check_ct,
        frame_words=("slice", "slices"),
        generator="Training.ct",
        stress="Training.stress_ct",
        generated="chest CT",
        # axial slices in the radiological orientation; no flips (the heart lies left); ImageNet Lite0
        # encoder on the randomised kind; the last step's weights (v2)
        recipe=Recipe("unet-efficientnet-lite0", {}, {"size": [160, 160], "intensity": {"method": "window",
                                                                                        "lower": -200, "upper": 400},
                                                      "orientation": "LPS"},
                      flip_dims=(), init="imagenet", kind="randomised", keep="last"),
        score_extras=_ct_extras,
        score_line=_ct_line,
        measure=_measure("structure_volumes"),
        measure_lines=_measure("volume_lines"),
    ),
    "echo": Task(
        name="echo",
        in_channels=1,
        channel_names=("echo",),
        classes=(
            {"name": "LV endocardium", "color": [0.85, 0.2, 0.2],
             "terminology": terminology(_ANATOMY, "SCT^87878005^Left ventricle")},
            {"name": "Myocardium", "color": [0.2, 0.6, 0.85],
             "terminology": terminology(_ANATOMY, "SCT^74281007^Myocardium")},
            {"name": "Left atrium", "color": [0.3, 0.75, 0.3],
             "terminology": terminology(_ANATOMY, "SCT^82471001^Left atrium")},
        ),
        bundled_model=HEART_MODELS_DIR / "echo_unet_lite0.safetensors",
        description="LV endocardium (cavity), LV myocardium and left atrium in apical 2- and 4-chamber echo",
        check_input=check_echo,
        generator="Training.echo",
        stress="Training.stress_echo",
        generated="echocardiography",
        # apex at the top: only left-right mirroring is a real orientation
        # ImageNet Lite0 encoder, randomised clips
        recipe=Recipe("unet-efficientnet-lite0", {}, {"size": [160, 160], "intensity": {"method": "window", "lower": 0,
                                                                                        "upper": 255}},
                      flip_dims=(3,), init="imagenet", kind="randomised"),
        score_extras=_echo_extras,
        score_line=_echo_line,
        measure=_measure("lv_area_curve"),
        measure_lines=_measure("lv_area_lines"),
    ),
    "instruments": Task(
        name="instruments",
        in_channels=3,
        channel_names=("R", "G", "B"),
        classes=(
            {"name": "Instrument", "color": [0.1, 0.85, 0.95],
             "terminology": terminology(_PHYSICAL_OBJECT, "SCT^272181003^Surgical instrument")},
        ),
        bundled_model=MODELS_DIR / "instruments_unet_lite0.safetensors",
        description="surgical instruments in colour (RGB) endoscopic and laparoscopic video frames",
        check_input=check_colour,
        generator="Training.endoscopy",
        stress="Training.stress_instruments",
        generated="endoscopy video",
        # colour endoscopy: instruments enter from any border, so every flip is a real orientation
        recipe=Recipe("unet-efficientnet-lite0", {}, {"size": [256, 256], "intensity": {"method": "window", "lower": 0,
                                                                                        "upper": 255}, "threshold": 0.5},
                      colour_augment=True, init="imagenet", kind="randomised"),
        card_kinds=("standard", "smoke"),  # smoke: the harder kind
        score_extras=_instruments_extras,
        score_line=_instruments_line,
    ),
}


def register_task(task: Task) -> Task:
    """Add a task record (a fifth task: its record and its generator module, nothing else)."""
    if task.name in TASKS:
        raise ValueError(f"task '{task.name}' is registered already")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return TASKS[name]


def bundled_model_dirs() -> set:
    """The folders of the bundled models (resolved); nothing else ever writes into them."""
    return {Path(t.bundled_model).parent.resolve() for t in TASKS.values()}
