"""The segmentation tasks: classes, input channels and preprocessing of each.

Terminology strings use Slicer's serialisation:
``context~category(scheme^code^meaning)~type~typeModifier~anatomicContext~region~regionModifier``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError


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


@dataclass(frozen=True)
class Task:
    name: str
    in_channels: int
    channel_names: tuple  # one per input channel, as nnU-Net's dataset.json names them
    classes: tuple  # foreground classes: dicts with name, color, terminology
    bundled_model: Path
    description: str
    # check_input(frames (T, H, W), slices): raises InputError naming the problem; slices=True when
    # the frames are independent 2D cases (a training folder), not one input
    check_input: Callable | None = None


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
        bundled_model=MODELS_DIR / "catheter_unet_effb2.safetensors",
        description="catheters and guidewires in grey X-ray fluoroscopy frames",
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
        bundled_model=HEART_MODELS_DIR / "echo_unet_resnet18.safetensors",
        description="LV endocardium (cavity), LV myocardium and left atrium in apical 2- and 4-chamber echo",
        check_input=check_echo,
    ),
    "instruments": Task(
        name="instruments",
        in_channels=3,
        channel_names=("R", "G", "B"),
        classes=(
            {"name": "Instrument", "color": [0.1, 0.85, 0.95],
             "terminology": terminology(_PHYSICAL_OBJECT, "SCT^272181003^Surgical instrument")},
        ),
        bundled_model=MODELS_DIR / "instruments_unet_resnet18.safetensors",
        description="surgical instruments in colour (RGB) endoscopic and laparoscopic video frames",
        check_input=check_colour,
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return TASKS[name]


def bundled_model_dirs() -> set:
    """The folders of the bundled models (resolved); nothing else ever writes into them."""
    return {Path(t.bundled_model).parent.resolve() for t in TASKS.values()}
