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
