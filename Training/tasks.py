"""The segmentation tasks: classes, input channels and preprocessing of each.

Terminology strings use Slicer's serialisation:
``context~category(scheme^code^meaning)~type~typeModifier~anatomicContext~region~regionModifier``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _models_dir() -> Path:
    """Bundled models: CatheterSeg/Resources/Models in the source tree; Resources/Models beside
    the Training folder when CMake has installed it next to the module."""
    root = Path(__file__).resolve().parent.parent
    installed = root / "Resources" / "Models"
    return installed if installed.is_dir() else root / "CatheterSeg" / "Resources" / "Models"


MODELS_DIR = _models_dir()

_PHYSICAL_OBJECT = "SCT^260787004^Physical object"


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
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return TASKS[name]
