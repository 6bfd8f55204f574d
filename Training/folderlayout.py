"""The layout of a training folder: its file names, case IDs, dataset.json's task keys, frame geometry.

Shared by the reader (``folderreader``) and the writer (``folderwriter``); the format itself is
described in ``trainingfolder``. No file is read or written here.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import CardioSegError

FILE_ENDING = ".nii.gz"
DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
FORMAT = "cardioseg-training-folder"
FORMAT_VERSION = 1
# Image files store geometry as float32: compare geometry with this tolerance (mm, and unitless
# for direction cosines), absolute plus relative.
GEOMETRY_ATOL = 1e-4
GEOMETRY_RTOL = 1e-5

TEMP_PREFIX = ".cardioseg-"  # temporary files of an export: hidden, removed by the next export


class TrainingFolderError(CardioSegError):
    """A training folder that cannot be read or written; the message names the folder and why."""


class CaseImageConflict(TrainingFolderError):
    """A case already holds another image for the frame being exported (same source name and
    frame index); it is replaced only on request (``replace_images``)."""



# --------------------------------------------------------------------------- names and task


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# A case ID names the case's files, so it must be a plain file-name stem: no path separator, no
# '..', not hidden. nnU-Net datasets of others may use dots; case_id() makes [A-Za-z0-9_-] only.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def case_id(source: str, frame_index: int) -> str:
    """The case ID of frame ``frame_index`` of ``source``, e.g. ``run01_f0007``.

    Deterministic, made of ``[A-Za-z0-9_-]``. A source name with other characters (or longer
    than 64) is sanitised and gets a short hash of the full name, so that different sources
    never share an ID: ``"run 01.nrrd"`` -> ``run_01_nrrd-4c1f2e_f0007``.
    """
    if isinstance(frame_index, bool) or int(frame_index) != frame_index or frame_index < 0:
        raise ValueError(f"frame index must be a non-negative integer, not {frame_index!r}")
    source = str(source)
    clean = _UNSAFE.sub("_", source).strip("_")
    if clean != source or not clean or len(clean) > 64:
        digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:6]
        clean = f"{clean[:48] or 'frames'}-{digest}"
    return f"{clean}_f{int(frame_index):04d}"


def task_layout(task: str) -> tuple[dict, dict]:
    """(channel_names, labels) of dataset.json for ``task``."""
    from .tasks import get_task

    t = get_task(task)
    names = t.channel_names  # nnU-Net picks its normalisation from these ("CT" or else z-score)
    if len(names) != t.in_channels:
        raise ValueError(f"task '{task}' has {t.in_channels} input channels but {len(names)} channel names")
    labels = {"background": 0}
    for k, c in enumerate(t.classes, start=1):
        labels[c["name"]] = k
    return {str(c): str(n) for c, n in enumerate(names)}, labels


def plain_id(cid, where: str = "") -> str:
    """``cid`` if it is a plain case ID (``_PLAIN_ID``, no '..'); else TrainingFolderError
    (``where`` prefixes the message): an ID such as ``../../x`` would name files outside the folder."""
    if not isinstance(cid, str) or not _PLAIN_ID.fullmatch(cid) or ".." in cid:
        raise TrainingFolderError(f"{where}case ID {cid!r} is not a plain file name (letters, digits, '_', '.', "
                                  "'-'; no '/', no '..', not starting with '.'); a case ID names the case's files")
    return cid


def image_name(cid: str, channel: int) -> str:
    return f"{IMAGES_DIR}/{plain_id(cid)}_{channel:04d}{FILE_ENDING}"


def label_name(cid: str) -> str:
    return f"{LABELS_DIR}/{plain_id(cid)}{FILE_ENDING}"



# --------------------------------------------------------------------------- geometry


def check_geometry(origin, spacing, direction) -> dict:
    """Validated geometry as plain floats: origin (3), spacing (3, > 0), direction (9, orthonormal)."""
    try:
        o = [float(v) for v in np.asarray(origin, dtype=float).ravel()]
        s = [float(v) for v in np.asarray(spacing, dtype=float).ravel()]
        d = [float(v) for v in np.asarray(direction, dtype=float).ravel()]
    except (TypeError, ValueError) as e:
        raise ValueError(f"geometry is not numeric: {e}") from None
    if len(o) != 3 or len(s) != 3 or len(d) != 9:
        raise ValueError(f"geometry needs 3 origin, 3 spacing and 9 direction values, got {len(o)}, {len(s)}, {len(d)}")
    if not all(math.isfinite(v) for v in o + s + d):
        raise ValueError("geometry has NaN or infinite values")
    if min(s) <= 0:
        raise ValueError(f"spacing must be positive, got {tuple(s)}")
    m = np.asarray(d).reshape(3, 3)
    if not np.allclose(m.T @ m, np.eye(3), atol=1e-4):
        raise ValueError("direction is not an orthonormal 3x3 matrix (image files cannot store shear)")
    return {"origin": o, "spacing": s, "direction": d}


def image_geometry(reader_or_image) -> dict:
    return {"origin": list(reader_or_image.GetOrigin()), "spacing": list(reader_or_image.GetSpacing()),
            "direction": list(reader_or_image.GetDirection())}


def geometry_close(a: dict, b: dict) -> bool:
    return all(len(a[k]) == len(b[k]) and np.allclose(a[k], b[k], rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)
               for k in ("origin", "spacing", "direction"))


def geometry_3d(reader) -> dict:
    """Geometry of a 2D or single-slice 3D image header, as 3D."""
    g = image_geometry(reader)
    if len(g["origin"]) == 2:
        d = g["direction"]
        g = {"origin": g["origin"] + [0.0], "spacing": g["spacing"] + [1.0],
             "direction": [d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0]}
    return g



def inside(root: Path, rel: str, folder: Path, what: str) -> Path:
    """The path ``rel`` (relative, POSIX) resolved inside ``root``; refuses anything that leaves it."""
    if not isinstance(rel, str) or not rel:
        raise TrainingFolderError(f"{folder}: {what} has an invalid path {rel!r}")
    if "$" in rel or "%" in rel or rel.startswith("~"):  # nnU-Net expands variables in these paths
        raise TrainingFolderError(f"{folder}: {what} path '{rel}' uses a variable or '~'; "
                                  "paths must be relative to the folder")
    p = PurePosixPath(rel)
    if p.is_absolute() or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise TrainingFolderError(f"{folder}: {what} path '{rel}' is absolute; paths must be relative to the folder")
    if ".." in p.parts:
        raise TrainingFolderError(f"{folder}: {what} path '{rel}' points outside the folder ('..')")
    full = root.joinpath(*p.parts)
    real = Path(os.path.realpath(full))
    if real != root and root not in real.parents:
        raise TrainingFolderError(f"{folder}: {what} path '{rel}' points outside the folder (to {real})")
    return full

