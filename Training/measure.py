"""Clinical measurements from label maps: volume of a structure in mL, area per frame, and the
end-diastolic and end-systolic frames of an echo clip.

Label maps are uint8 arrays, frames or slices first: (K, H, W). Spacings are in mm, ordered like
the array axes.
"""
from __future__ import annotations

import numpy as np


def volume_ml(labels: np.ndarray, spacing_mm, label: int = 1) -> float:
    """Volume of ``label`` in a (Z, Y, X) label map with voxel spacing (z, y, x) mm, in mL."""
    if labels.ndim != 3 or len(spacing_mm) != 3:
        raise ValueError(f"volume_ml needs a 3D label map and 3 spacings, got {labels.shape} and {spacing_mm}")
    return float(np.count_nonzero(labels == label) * np.prod(spacing_mm) / 1000.0)


def area_per_frame_mm2(labels: np.ndarray, spacing_mm, label: int = 1) -> np.ndarray:
    """Area of ``label`` in each frame of a (T, H, W) label map with pixel spacing (row, col) mm."""
    if labels.ndim != 3 or len(spacing_mm) != 2:
        raise ValueError(f"area_per_frame_mm2 needs (T, H, W) labels and a (row, col) spacing, "
                         f"got {labels.shape} and {spacing_mm}")
    return np.count_nonzero(labels == label, axis=(1, 2)) * float(np.prod(spacing_mm))


def ed_es_frames(lv_area) -> tuple[int, int]:
    """(end-diastolic, end-systolic) frame indices: the largest and the smallest LV area.

    Raises ValueError when the LV is absent from every frame or its area never changes, since
    then there is no cardiac cycle to read.
    """
    a = np.asarray(lv_area, dtype=float)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"ED/ES need an LV area for 2 or more frames, got shape {a.shape}")
    if not np.isfinite(a).all() or a.max() <= 0:
        raise ValueError("no LV was found in any frame, so ED and ES cannot be found")
    if a.max() == a.min():
        raise ValueError("the LV area is the same in every frame, so ED and ES cannot be told apart")
    return int(np.argmax(a)), int(np.argmin(a))


# --- the measurements of a task record (Training.tasks: Task.measure, Task.measure_lines) ---

LV_CLASS = "LV endocardium"


def structure_volumes(labels: np.ndarray, spacing_zyx, classes) -> dict:
    """{"volumes_ml": {class name: mL}} of each class of a (Z, Y, X) label map."""
    return {"volumes_ml": {c["name"]: volume_ml(labels, spacing_zyx, k) for k, c in enumerate(classes, start=1)}}


def volume_lines(m: dict) -> list:
    return [f"{name} volume: {ml:.1f} mL" for name, ml in m["volumes_ml"].items()]


def lv_area_curve(labels: np.ndarray, spacing_zyx, classes, lv_name: str = LV_CLASS) -> dict:
    """LV area per frame of a (T, H, W) clip: {"area_mm2": [mm2 per frame], "ed_frame",
    "es_frame": int or None, "message": "" or why ED/ES could not be found}."""
    names = [c["name"] for c in classes]
    if lv_name not in names:
        raise ValueError(f"the classes {names} have no '{lv_name}'")
    area = area_per_frame_mm2(labels, tuple(spacing_zyx)[1:], label=names.index(lv_name) + 1)
    curve = {"area_mm2": [float(a) for a in area], "ed_frame": None, "es_frame": None, "message": ""}
    try:
        curve["ed_frame"], curve["es_frame"] = ed_es_frames(area)
    except ValueError as e:
        curve["message"] = str(e)
    return curve


def lv_area_lines(m: dict) -> list:
    lines = ["LV area per frame (mm2): " + " ".join(f"{v:.0f}" for v in m["area_mm2"])]
    if m["ed_frame"] is None:
        lines.append(f"ED/ES not found: {m['message']}")
    else:
        lines.append(f"end-diastolic frame {m['ed_frame']}, end-systolic frame {m['es_frame']}")
    return lines
