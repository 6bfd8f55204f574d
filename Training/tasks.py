"""The segmentation tasks: classes, input channels and preprocessing of each.

Terminology strings use Slicer's serialisation:
``context~category(scheme^code^meaning)~type~typeModifier~anatomicContext~region~regionModifier``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        bundled_model=HEART_MODELS_DIR / "echo_deeplabv3.safetensors",
        description="LV endocardium (cavity), LV myocardium and left atrium in apical 2- and 4-chamber echo",
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return TASKS[name]


def bundled_model_dirs() -> set:
    """The folders of the bundled models (resolved); nothing else ever writes into them."""
    return {Path(t.bundled_model).parent.resolve() for t in TASKS.values()}
