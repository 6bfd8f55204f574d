"""The training folder: its one writer (``export_frames``) and its one reader (``TrainingFolder``).

Layout: an nnU-Net v2 raw dataset (nnU-Net's ``documentation/dataset_format.md``)::

    FOLDER/
      dataset.json                      the single source of truth (below)
      imagesTr/{case}_{c:04d}.nii.gz    channel c of a case: one 2D frame stored as a
                                        single-slice 3D image, original dtype and values
      labelsTr/{case}.nii.gz            uint8 label map of that frame, same geometry

Each frame keeps its real 3D geometry: origin of that slice, spacing and direction, in
SimpleITK's LPS convention. Arrays are numpy order: an image is (H, W) = (rows, columns),
or (H, W, C) for C channels; origin, spacing and direction are (x, y, z) in mm.

``dataset.json`` holds nnU-Net v2's required keys (``channel_names``, ``labels``,
``numTraining``, ``file_ending``), nnU-Net's optional ``dataset`` key that lists each case's
files as paths relative to the folder, and the manifest under ``cardioseg``: the task and, per
case ID, source volume name, frame index, geometry, model version and export time (ISO 8601,
UTC). nnU-Net reads the ``dataset`` key instead of scanning the folders, so a file that
``dataset.json`` does not list is invisible to it as well as to this reader.

Crash safety: a case's files are written under temporary names (hidden, ``.cardioseg-...``),
read back and checked, then ``dataset.json`` is replaced atomically (temporary file, fsync,
``os.replace``) to list those files; only then are they linked (or copied) onto their final
names, ``dataset.json`` is replaced again to list the final names, and the temporary names are
removed. Every file that a committed ``dataset.json`` lists therefore exists, complete, until
another committed ``dataset.json`` stops listing it: a kill at any moment leaves the old or the
new version of each case, never a mixture, and ``numTraining`` always equals the cases listed.
The next export finishes an interrupted one and removes its leftovers. Exports into one folder
are serialised by a lock file (``.cardioseg.lock``, released by the OS when a process dies).

No Slicer here: CardioSegLib turns scene nodes into ``Frame`` records and back.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np
import SimpleITK as sitk

from .errors import CardioSegError
from .outputfiles import folder_lock
from .filecheck import IncompleteFileError, check_complete

FILE_ENDING = ".nii.gz"
DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
FORMAT = "cardioseg-training-folder"
FORMAT_VERSION = 1
# dataset.json is rewritten at most about this often during an export (and at its end); a kill
# loses at most the cases of the last interval, never a case that was already in the folder.
COMMIT_SECONDS = 1.0
# Image files store geometry as float32: compare geometry with this tolerance (mm, and unitless
# for direction cosines), absolute plus relative.
GEOMETRY_ATOL = 1e-4
GEOMETRY_RTOL = 1e-5

_TEMP_PREFIX = ".cardioseg-"
_PIXEL_KINDS = "uif"


class TrainingFolderError(CardioSegError):
    """A training folder that cannot be read or written; the message names the folder and why."""


class CaseImageConflict(TrainingFolderError):
    """A case already holds another image for the frame being exported (same source name and
    frame index); it is replaced only on request (``replace_images``)."""


@dataclass
class Frame:
    """One frame to export.

    image: (H, W) grey ((H, W, C) for C channels), original dtype and values.
    label: uint8 (H, W), 0 background and k the task's k-th class.
    origin: (x, y, z) mm of the frame's first pixel, LPS (SimpleITK convention).
    spacing: (sx, sy, sz) mm (sz: the distance between frames, or the slice thickness).
    direction: 9 values, row-major 3x3, column j the LPS direction of image axis j.
    source: name of the volume the frame comes from; frame_index: its index there.
    model_version: version of the model that pre-labelled it ("" if none).
    """

    image: np.ndarray
    label: np.ndarray
    origin: tuple
    spacing: tuple
    direction: tuple
    source: str
    frame_index: int
    model_version: str = ""


@dataclass
class Case:
    """One case of a training folder. ``geometry`` is ``{"origin", "spacing", "direction"}``;
    source, frame_index, model_version and time are "", -1, "", "" for a case without manifest
    entry (an nnU-Net dataset not written by CardioSeg)."""

    case_id: str
    image_paths: list
    label_path: Path
    source: str
    frame_index: int
    geometry: dict
    model_version: str
    time: str


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


def _task_layout(task: str) -> tuple[dict, dict]:
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


def _plain_id(cid, where: str = "") -> str:
    """``cid`` if it is a plain case ID (``_PLAIN_ID``, no '..'); else TrainingFolderError
    (``where`` prefixes the message): an ID such as ``../../x`` would name files outside the folder."""
    if not isinstance(cid, str) or not _PLAIN_ID.fullmatch(cid) or ".." in cid:
        raise TrainingFolderError(f"{where}case ID {cid!r} is not a plain file name (letters, digits, '_', '.', "
                                  "'-'; no '/', no '..', not starting with '.'); a case ID names the case's files")
    return cid


def _image_name(cid: str, channel: int) -> str:
    return f"{IMAGES_DIR}/{_plain_id(cid)}_{channel:04d}{FILE_ENDING}"


def _label_name(cid: str) -> str:
    return f"{LABELS_DIR}/{_plain_id(cid)}{FILE_ENDING}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- geometry


def _geometry(origin, spacing, direction) -> dict:
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


def _image_geometry(reader_or_image) -> dict:
    return {"origin": list(reader_or_image.GetOrigin()), "spacing": list(reader_or_image.GetSpacing()),
            "direction": list(reader_or_image.GetDirection())}


def _geometry_close(a: dict, b: dict) -> bool:
    return all(len(a[k]) == len(b[k]) and np.allclose(a[k], b[k], rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)
               for k in ("origin", "spacing", "direction"))


def _geometry_3d(reader) -> dict:
    """Geometry of a 2D or single-slice 3D image header, as 3D."""
    g = _image_geometry(reader)
    if len(g["origin"]) == 2:
        d = g["direction"]
        g = {"origin": g["origin"] + [0.0], "spacing": g["spacing"] + [1.0],
             "direction": [d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0]}
    return g


# --------------------------------------------------------------------------- reader


def _inside(root: Path, rel: str, folder: Path, what: str) -> Path:
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


class TrainingFolder:
    """The reader: opens and checks a training folder.

    Checks, like nnU-Net's ``verify_dataset_integrity``: dataset.json has the required keys and
    consecutive integer labels from 0; ``numTraining`` equals the cases; every case has one
    image per channel and a label, all present and inside the folder (no absolute path, no
    ``..``, no symlink leading out); images and label share size, spacing, origin and direction
    (and match the manifest); each case is one frame; case IDs are plain file names (no '/', no
    '..': they name the files the writer writes). With ``verify_pixels`` (default) it also checks
    that every file is complete (``filecheck.check_complete``: not truncated, no gzip CRC error)
    and reads every label (values must be labels of dataset.json) and every floating-point image
    (no NaN or infinity).

    Attributes:
        folder: the folder (Path). dataset: dataset.json as a dict. task: the manifest's task
        (None for a dataset not written by CardioSeg). cases: list of ``Case``, sorted by ID.
        unreferenced: files in imagesTr/labelsTr that dataset.json does not list (leftovers
        of an interrupted export, or files put there by hand): ignored, and overwritten when
        the same case is exported again.

    Raises TrainingFolderError naming the problem.
    """

    def __init__(self, folder, verify_pixels: bool = True):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise TrainingFolderError(f"training folder {self.folder} does not exist or is not a folder")
        self._root = Path(os.path.realpath(self.folder))
        json_path = _inside(self._root, DATASET_JSON, self.folder, "dataset.json")
        if not json_path.is_file():
            raise TrainingFolderError(f"{self.folder} is not a training folder: it has no {DATASET_JSON}")
        try:
            self.dataset = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TrainingFolderError(f"{self.folder}: cannot read {DATASET_JSON}: {e}") from None
        if not isinstance(self.dataset, dict):
            raise TrainingFolderError(f"{self.folder}: {DATASET_JSON} is not a JSON object")
        self._check_keys()
        manifest = self._manifest()
        self.task = manifest.get("task") if manifest else None
        listing = self._listing()
        if self.dataset["numTraining"] != len(listing):
            raise TrainingFolderError(f"{self.folder}: {DATASET_JSON} says numTraining {self.dataset['numTraining']} "
                                      f"but lists {len(listing)} cases")
        entries = manifest.get("cases", {}) if manifest else None
        for cid in [*listing, *(entries or ())]:  # from the dataset key (or the file names) and the manifest
            _plain_id(cid, f"{self.folder}: ")
        if entries is not None and set(entries) != set(listing):
            extra = sorted(set(entries) ^ set(listing))
            raise TrainingFolderError(f"{self.folder}: the manifest and the case list of {DATASET_JSON} differ "
                                      f"(cases {', '.join(extra[:5])})")
        self.cases = []
        referenced = set()
        for cid in sorted(listing):
            images, label = listing[cid]
            for p in images + [label]:
                if p in referenced:
                    raise TrainingFolderError(f"{self.folder}: case {cid}: file '{p.relative_to(self.folder)}' "
                                              "is listed twice")
                referenced.add(p)
            self.cases.append(self._check_case(cid, images, label, entries.get(cid) if entries is not None else None,
                                               verify_pixels))
        self._complete = verify_pixels  # every file of every case passed check_complete
        self.unreferenced = sorted(
            p for d in (IMAGES_DIR, LABELS_DIR) if (self.folder / d).is_dir()
            for p in (self.folder / d).iterdir() if p not in referenced and not p.is_dir())
        self._by_id = {c.case_id: c for c in self.cases}

    # -- dataset.json

    def _check_keys(self):
        d, f = self.dataset, self.folder
        missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in d]
        if missing:
            raise TrainingFolderError(f"{f}: {DATASET_JSON} lacks nnU-Net's required key(s) {', '.join(missing)}")
        ch = d["channel_names"]
        if not isinstance(ch, dict) or not ch or sorted(ch, key=str) != sorted(str(i) for i in range(len(ch))):
            raise TrainingFolderError(f"{f}: {DATASET_JSON} channel_names must map '0', '1', ... to names, got {ch!r}")
        labels = d["labels"]
        if not isinstance(labels, dict) or not labels:
            raise TrainingFolderError(f"{f}: {DATASET_JSON} labels must map names to integers, got {labels!r}")
        for name, v in labels.items():
            if isinstance(v, (list, tuple)):
                raise TrainingFolderError(f"{f}: label '{name}' is a region {v}; region-based labels are not supported")
            if isinstance(v, bool) or not isinstance(v, int):
                raise TrainingFolderError(f"{f}: label '{name}' has the non-integer value {v!r}")
        values = sorted(labels.values())
        if values != list(range(len(values))):
            raise TrainingFolderError(f"{f}: labels must be consecutive integers from 0 (background), got {values}")
        n = d["numTraining"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise TrainingFolderError(f"{f}: numTraining must be a non-negative integer, got {n!r}")
        ending = d["file_ending"]
        if not isinstance(ending, str) or not ending.startswith("."):
            raise TrainingFolderError(f"{f}: file_ending must be like '.nii.gz', got {ending!r}")

    def _manifest(self) -> dict | None:
        m = self.dataset.get("cardioseg")
        if m is None:
            return None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise TrainingFolderError(f"{self.folder}: the 'cardioseg' key of {DATASET_JSON} is not a "
                                      "CardioSeg manifest")
        if not isinstance(m.get("version"), int) or m["version"] > FORMAT_VERSION:
            raise TrainingFolderError(f"{self.folder}: manifest version {m.get('version')!r} is newer than this "
                                      f"CardioSeg reads ({FORMAT_VERSION}); update CardioSeg")
        if not isinstance(m.get("cases"), dict):
            raise TrainingFolderError(f"{self.folder}: the manifest has no 'cases' object")
        return m

    def _listing(self) -> dict:
        """{case ID: ([image paths], label path)}, from the ``dataset`` key or, like nnU-Net
        without it, from the files of imagesTr/labelsTr."""
        ending = self.dataset["file_ending"]
        n_channels = len(self.dataset["channel_names"])
        out = {}
        if "dataset" in self.dataset:
            listed = self.dataset["dataset"]
            if not isinstance(listed, dict):
                raise TrainingFolderError(f"{self.folder}: the 'dataset' key of {DATASET_JSON} is not an object")
            for cid, entry in listed.items():
                if not isinstance(entry, dict) or not isinstance(entry.get("images"), list) or "label" not in entry:
                    raise TrainingFolderError(f"{self.folder}: case {cid}: entry needs 'images' (a list) and 'label'")
                images = [self._path(p, f"case {cid} image", IMAGES_DIR, ending) for p in entry["images"]]
                label = self._path(entry["label"], f"case {cid} label", LABELS_DIR, ending)
                out[cid] = (images, label)
        else:
            for d in (IMAGES_DIR, LABELS_DIR):
                if not (self.folder / d).is_dir():
                    raise TrainingFolderError(f"{self.folder}: there is no {d} folder")
                _inside(self._root, d, self.folder, d)
            pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
            found = {}
            for p in sorted((self.folder / IMAGES_DIR).iterdir()):
                m = pattern.fullmatch(p.name)
                if m and not p.name.startswith("."):
                    found.setdefault(m.group(1), []).append(p.name)
            for cid, names in found.items():
                images = [self._path(f"{IMAGES_DIR}/{n}", f"case {cid} image", IMAGES_DIR, ending) for n in names]
                label = self._path(f"{LABELS_DIR}/{cid}{ending}", f"case {cid} label", LABELS_DIR, ending)
                out[cid] = (images, label)
        for cid, (images, _) in out.items():
            if len(images) != n_channels:
                raise TrainingFolderError(f"{self.folder}: case {cid} has {len(images)} image file(s) but "
                                          f"channel_names lists {n_channels} channel(s)")
        return out

    def _path(self, rel, what: str, subdir: str, ending: str) -> Path:
        full = _inside(self._root, rel, self.folder, what)
        parts = PurePosixPath(rel).parts
        if len(parts) != 2 or parts[0] != subdir or not rel.endswith(ending):
            raise TrainingFolderError(f"{self.folder}: {what} '{rel}' must be a file '{subdir}/...{ending}'")
        if not full.is_file():
            raise TrainingFolderError(f"{self.folder}: {what} file '{rel}' is missing")
        return self.folder / subdir / parts[1]

    # -- cases

    def _header(self, path: Path, cid: str):
        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            self._check_complete(path, cid)  # a clearer reason than ITK's, if the file is cut short
            last = str(e).strip().splitlines()
            raise TrainingFolderError(f"{self.folder}: case {cid}: cannot read {path.relative_to(self.folder)}: "
                                      f"{last[-1] if last else 'unreadable'}") from None
        size = r.GetSize()
        if r.GetDimension() not in (2, 3) or (r.GetDimension() == 3 and size[2] != 1):
            raise TrainingFolderError(f"{self.folder}: case {cid}: {path.relative_to(self.folder)} has size {size}; "
                                      "a case is one 2D frame (a single-slice image)")
        if r.GetNumberOfComponents() != 1:
            raise TrainingFolderError(f"{self.folder}: case {cid}: {path.relative_to(self.folder)} has "
                                      f"{r.GetNumberOfComponents()} components per pixel; store one channel per file")
        return r

    def _check_case(self, cid, images, label, entry, verify_pixels) -> Case:
        f = self.folder
        headers = [self._header(p, cid) for p in images]
        lab = self._header(label, cid)
        geom = _geometry_3d(headers[0])
        size = tuple(headers[0].GetSize()[:2])
        for p, h in list(zip(images, headers))[1:] + [(label, lab)]:
            if tuple(h.GetSize()[:2]) != size:
                raise TrainingFolderError(f"{f}: case {cid}: {p.relative_to(f)} has size {tuple(h.GetSize()[:2])} "
                                          f"but {images[0].relative_to(f)} has {size}")
            if not _geometry_close(_geometry_3d(h), geom):
                raise TrainingFolderError(f"{f}: case {cid}: the geometry (origin, spacing, direction) of "
                                          f"{p.relative_to(f)} differs from {images[0].relative_to(f)}")
        if sitk.GetPixelIDValueAsString(lab.GetPixelID()).endswith("float"):
            raise TrainingFolderError(f"{f}: case {cid}: label {label.relative_to(f)} is not an integer map")
        if entry is not None:
            entry = self._check_entry(cid, entry)
            if not _geometry_close(entry["geometry"], geom):
                raise TrainingFolderError(f"{f}: case {cid}: the geometry in the manifest differs from the file "
                                          f"{images[0].relative_to(f)}")
            geom = entry["geometry"]
        if verify_pixels:
            for p in images + [label]:
                self._check_complete(p, cid)
            allowed = np.array(sorted(self.dataset["labels"].values()))
            values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label))))
            bad = np.setdiff1d(values, allowed)
            if bad.size:
                raise TrainingFolderError(f"{f}: case {cid}: label {label.relative_to(f)} has value(s) "
                                          f"{bad.tolist()} that are not labels of {DATASET_JSON} {allowed.tolist()}")
            for p, h in zip(images, headers):
                if "float" in sitk.GetPixelIDValueAsString(h.GetPixelID()):
                    if not np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))).all():
                        raise TrainingFolderError(f"{f}: case {cid}: image {p.relative_to(f)} has NaN or "
                                                  "infinite values")
        e = entry or {}
        return Case(case_id=cid, image_paths=list(images), label_path=label, source=e.get("source", ""),
                    frame_index=e.get("frame_index", -1), geometry=geom, model_version=e.get("model_version", ""),
                    time=e.get("time", ""))

    def _check_complete(self, path: Path, cid: str):
        """TrainingFolderError naming the case if ``path`` is truncated or corrupt (SimpleITK would
        read the missing voxels of a truncated .nii.gz as zeros)."""
        check_complete(path, TrainingFolderError,
                       f"{self.folder}: case {cid}: cannot read {path.relative_to(self.folder)}")

    def _check_entry(self, cid, entry) -> dict:
        if not isinstance(entry, dict):
            raise TrainingFolderError(f"{self.folder}: manifest entry of case {cid} is not an object")
        fields = (("source", str), ("frame_index", int), ("model_version", str), ("time", str), ("geometry", dict))
        for key, kind in fields:
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise TrainingFolderError(f"{self.folder}: manifest entry of case {cid} has no valid '{key}'")
        try:
            g = entry["geometry"]
            geometry = _geometry(g["origin"], g["spacing"], g["direction"])
        except (KeyError, ValueError) as e:
            raise TrainingFolderError(f"{self.folder}: manifest entry of case {cid}: bad geometry ({e})") from None
        return {**entry, "geometry": geometry}

    # -- public

    def __len__(self) -> int:
        return len(self.cases)

    def case(self, case_id: str) -> Case:
        if case_id not in self._by_id:
            raise KeyError(f"no case '{case_id}' in training folder {self.folder}")
        return self._by_id[case_id]

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(image, label, geometry) of a case: image (H, W) in its stored dtype ((H, W, C) for
        several channels), label uint8 (H, W), geometry ``{"origin", "spacing", "direction"}``
        (3, 3 and 9 floats, LPS). Raises KeyError for an unknown case, TrainingFolderError for a
        truncated or corrupt file."""
        c = self.case(case_id)
        if not self._complete:  # not checked when the folder was opened
            for p in c.image_paths + [c.label_path]:
                self._check_complete(p, case_id)
        channels = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in c.image_paths]
        channels = [a[0] if a.ndim == 3 else a for a in channels]
        image = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(c.label_path)))
        label = (label[0] if label.ndim == 3 else label).astype(np.uint8)
        geometry = {k: tuple(v) for k, v in c.geometry.items()}
        return image, label, geometry


def read_training_folder(folder, verify_pixels: bool = True) -> TrainingFolder:
    """Open and check a training folder (see ``TrainingFolder``)."""
    return TrainingFolder(folder, verify_pixels=verify_pixels)


# --------------------------------------------------------------------------- writer


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_image(image: sitk.Image, path: Path) -> None:
    """Write ``image`` to ``path`` and fsync it; OSError on failure."""
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise OSError(errno.EIO, f"cannot write {path.name}: {lines[-1] if lines else 'write failed'}") from None
    _fsync_file(path)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _dumps(value, path: tuple = (), indent: int = 0) -> str:
    """JSON with nested objects indented, except one line per case under "dataset" and
    "cardioseg"/"cases" (deterministic, ASCII)."""
    one_line = (len(path) == 2 and path[0] == "dataset") or (len(path) == 3 and path[:2] == ("cardioseg", "cases"))
    if isinstance(value, dict) and value and not one_line:
        pad = "  " * (indent + 1)
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, path + (k,), indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    return json.dumps(value, separators=(", ", ": "))


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


@dataclass
class _Entry:
    images: list  # relative POSIX paths
    label: str
    meta: dict  # source, frame_index, geometry, model_version, time


@dataclass
class _Pending:
    cid: str
    entry: _Entry  # pointing at temporary files
    temps: list = field(default_factory=list)  # Paths


class _Writer:
    """Holds the committed state of one folder during an export (under its lock)."""

    def __init__(self, folder: Path, task: str):
        self.folder = folder
        self.task = task
        self.channel_names, self.labels = _task_layout(task)
        self.extra = {}  # keys of an existing dataset.json that this writer does not manage
        self.entries: dict[str, _Entry] = {}
        self.json_bytes = b""

    # -- opening

    def open(self):
        f = self.folder
        json_path = f / DATASET_JSON
        if json_path.exists() or json_path.is_symlink():
            current = TrainingFolder(f, verify_pixels=False)
            doc = current.dataset
            if doc.get("cardioseg") is None:
                raise TrainingFolderError(f"{f} holds a dataset.json that CardioSeg did not write; "
                                          "export into an empty folder or a CardioSeg training folder")
            if doc["labels"] != self.labels or doc["channel_names"] != self.channel_names or current.task != self.task:
                raise TrainingFolderError(
                    f"{f} is a training folder for task '{current.task}' with labels {doc['labels']} and channels "
                    f"{doc['channel_names']}; task '{self.task}' needs labels {self.labels} and channels "
                    f"{self.channel_names}. Choose another folder")
            if doc["file_ending"] != FILE_ENDING:
                raise TrainingFolderError(f"{f} uses file ending {doc['file_ending']}; CardioSeg writes {FILE_ENDING}")
            self.extra = {k: v for k, v in doc.items()
                          if k not in ("channel_names", "labels", "numTraining", "file_ending", "dataset", "cardioseg")}
            manifest = doc["cardioseg"]["cases"]
            for cid, (images, label) in ((c.case_id, (c.image_paths, c.label_path)) for c in current.cases):
                meta = dict(manifest[cid])
                self.entries[cid] = _Entry(images=[p.relative_to(f).as_posix() for p in images],
                                           label=label.relative_to(f).as_posix(), meta=meta)
            self.json_bytes = json_path.read_bytes()
            for d in (IMAGES_DIR, LABELS_DIR):
                (f / d).mkdir(exist_ok=True)
        else:
            _check_not_foreign(f)
            for d in (IMAGES_DIR, LABELS_DIR):
                (f / d).mkdir(exist_ok=True)
            self.commit_entries(self.entries)
        # finish an export that was interrupted after listing its temporary files
        self.finalise([cid for cid, e in self.entries.items() if not self._canonical(cid, e)])
        self.remove_leftovers()

    def _canonical(self, cid: str, e: _Entry) -> bool:
        return e.images == [_image_name(cid, c) for c in range(len(e.images))] and e.label == _label_name(cid)

    def remove_leftovers(self):
        """Delete temporary files that the committed dataset.json does not list (we hold the lock,
        so no other export is writing them)."""
        listed = {p for e in self.entries.values() for p in e.images + [e.label]}
        for d in (self.folder, self.folder / IMAGES_DIR, self.folder / LABELS_DIR):
            for p in d.iterdir():
                rel = p.relative_to(self.folder).as_posix()
                if p.name.startswith(_TEMP_PREFIX) and rel not in listed and p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()

    # -- dataset.json

    def document(self, entries: dict) -> dict:
        ids = sorted(entries)
        doc = {
            "channel_names": self.channel_names,
            "labels": self.labels,
            "numTraining": len(ids),
            "file_ending": FILE_ENDING,
        }
        doc.update(self.extra or {"name": f"CardioSeg {self.task}",
                                  "description": "Frames exported by CardioSeg; see the 'cardioseg' manifest"})
        doc["dataset"] = {cid: {"images": entries[cid].images, "label": entries[cid].label} for cid in ids}
        doc["cardioseg"] = {"format": FORMAT, "version": FORMAT_VERSION, "task": self.task,
                            "cases": {cid: entries[cid].meta for cid in ids}}
        return doc

    def commit_entries(self, entries: dict):
        """Atomically make ``entries`` the folder's content (dataset.json: temp, fsync, replace)."""
        data = (_dumps(self.document(entries)) + "\n").encode("utf-8")
        if data != self.json_bytes:
            tmp = self.folder / f"{_TEMP_PREFIX}{secrets.token_hex(6)}-{DATASET_JSON}"
            try:
                _write_bytes(tmp, data)
                os.replace(tmp, self.folder / DATASET_JSON)
            except Exception:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            _fsync_dir(self.folder)
            self.json_bytes = data
        self.entries = dict(entries)

    # -- cases

    def commit(self, batch: list):
        """List the batch's temporary files in dataset.json, then move them onto their names."""
        if not batch:
            return
        entries = dict(self.entries)
        for p in batch:
            entries[p.cid] = p.entry
        self.commit_entries(entries)
        self.finalise([p.cid for p in batch])
        batch.clear()

    def finalise(self, cids: list):
        """Give listed cases their final file names: link (or copy) each temporary file onto its
        name, list the names in dataset.json, then delete the temporary files."""
        if not cids:
            return
        entries = dict(self.entries)
        old = []
        for cid in cids:
            e = entries[cid]
            names = [_image_name(cid, c) for c in range(len(e.images))] + [_label_name(cid)]
            for src, dst in zip(e.images + [e.label], names):
                if src != dst:
                    self._place(self.folder / src, self.folder / dst)
                    old.append(self.folder / src)
            entries[cid] = _Entry(images=names[:-1], label=names[-1], meta=e.meta)
        for d in (IMAGES_DIR, LABELS_DIR):
            _fsync_dir(self.folder / d)
        self.commit_entries(entries)
        for p in old:
            with contextlib.suppress(OSError):
                p.unlink()

    def _place(self, src: Path, dst: Path):
        tmp = dst.with_name(f"{_TEMP_PREFIX}{secrets.token_hex(6)}-{dst.name}")
        try:
            try:
                os.link(src, tmp)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                    raise
                shutil.copyfile(src, tmp)  # a file system without hard links
                _fsync_file(tmp)
            os.replace(tmp, dst)
        except Exception:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def discard(self, batch: list):
        """Delete the temporary files of uncommitted cases."""
        listed = {p for e in self.entries.values() for p in e.images + [e.label]}
        for p in batch:
            for t in p.temps:
                if t.relative_to(self.folder).as_posix() not in listed:
                    with contextlib.suppress(OSError):
                        t.unlink()
        batch.clear()

    def _stored(self, rels: list, arrays: list) -> bool | None:
        """True if the files ``rels`` hold exactly ``arrays``, False if not, None if unreadable."""
        try:
            for rel, a in zip(rels, arrays):
                check_complete(self.folder / rel)
                stored = sitk.GetArrayFromImage(sitk.ReadImage(str(self.folder / rel)))
                if stored.dtype != a.dtype or stored.shape != (1,) + a.shape or not np.array_equal(stored[0], a):
                    return False
        except (RuntimeError, IncompleteFileError):
            return None
        return True

    def compare(self, cid: str, meta: dict, channels: list, label: np.ndarray) -> tuple[bool, bool]:
        """(other image, unchanged) of case ``cid`` against this frame, each image file read once:
        other image if the case holds a readable image other than ``channels``; unchanged if it
        holds exactly this frame (then it is left as it is)."""
        e = self.entries.get(cid)
        if e is None:
            return False, False
        if len(e.images) != len(channels):
            return True, False
        same_image = self._stored(e.images, channels)
        if not same_image:
            return same_image is False, False
        if any(e.meta.get(k) != meta[k] for k in ("source", "frame_index", "geometry", "model_version")):
            return False, False
        return False, bool(self._stored([e.label], [label]))

    def write_temps(self, cid: str, meta: dict, channels: list, label: np.ndarray) -> _Pending:
        """Write a case under temporary names, read it back and compare; OSError on failure."""
        g = meta["geometry"]
        token = secrets.token_hex(6)
        pending = _Pending(cid=cid, entry=_Entry(images=[], label="", meta=meta))
        try:
            for c, a in enumerate(channels + [label]):
                is_label = c == len(channels)
                final = _label_name(cid) if is_label else _image_name(cid, c)
                rel = str(PurePosixPath(final).with_name(f"{_TEMP_PREFIX}{token}-{PurePosixPath(final).name}"))
                path = self.folder / rel
                pending.temps.append(path)
                img = sitk.GetImageFromArray(np.ascontiguousarray(a)[None])
                img.SetOrigin(g["origin"])
                img.SetSpacing(g["spacing"])
                img.SetDirection(g["direction"])
                _write_image(img, path)
                try:
                    check_complete(path)
                    back = sitk.ReadImage(str(path))
                    same = (np.array_equal(sitk.GetArrayViewFromImage(back)[0], a)
                            and _geometry_close(_image_geometry(back), g))
                except (RuntimeError, IncompleteFileError):
                    same = False
                if not same:
                    raise OSError(errno.EIO, f"{final} did not read back as written (is the disk full?)")
                if is_label:
                    pending.entry.label = rel
                else:
                    pending.entry.images.append(rel)
        except Exception:
            for t in pending.temps:
                with contextlib.suppress(OSError):
                    t.unlink()
            raise
        return pending


def _prepare(frame: Frame, n_channels: int, n_classes: int) -> tuple[str, dict, list, np.ndarray]:
    """Validate a frame: (case ID, manifest entry without time, channel arrays, uint8 label)."""
    where = f"frame {frame.frame_index} of '{frame.source}'"
    image = np.asarray(frame.image)
    if not image.dtype.isnative:
        image = image.astype(image.dtype.newbyteorder("="))
    if image.dtype.kind not in _PIXEL_KINDS or image.dtype.itemsize > 8 or image.dtype == np.float16:
        raise TrainingFolderError(f"{where}: image pixel type {image.dtype} cannot be stored; "
                                  "use an integer type, float32 or float64")
    if n_channels == 1 and image.ndim == 2:
        channels = [image]
    elif image.ndim == 3 and image.shape[-1] == n_channels and n_channels > 1:
        channels = [image[..., c] for c in range(n_channels)]
    else:
        want = "(H, W)" if n_channels == 1 else f"(H, W, {n_channels})"
        raise TrainingFolderError(f"{where}: image has shape {image.shape}; this task needs {want}")
    label = np.asarray(frame.label)
    if label.shape != channels[0].shape:
        raise TrainingFolderError(f"{where}: label shape {label.shape} differs from image shape {channels[0].shape}")
    if label.dtype.kind not in "uib":
        raise TrainingFolderError(f"{where}: label must be an integer map, not {label.dtype}")
    if label.size and (int(label.min()) < 0 or int(label.max()) > n_classes):
        raise TrainingFolderError(f"{where}: label values {int(label.min())}..{int(label.max())} are outside "
                                  f"0..{n_classes} (background and the task's classes)")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise TrainingFolderError(f"{where}: image has NaN or infinite values")
    try:
        geometry = _geometry(frame.origin, frame.spacing, frame.direction)
    except ValueError as e:
        raise TrainingFolderError(f"{where}: {e}") from None
    cid = case_id(frame.source, frame.frame_index)
    meta = {"source": str(frame.source), "frame_index": int(frame.frame_index), "geometry": geometry,
            "model_version": str(frame.model_version or "")}
    return cid, meta, channels, label.astype(np.uint8)


def _os_error(folder: Path, e: OSError) -> TrainingFolderError:
    cause = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        cause += " (the disk is full)"
    name = f" ({e.filename})" if e.filename else ""
    return TrainingFolderError(f"cannot write training folder {folder}: {cause}{name}; "
                               "the cases written before are kept")


def _check_not_foreign(folder: Path) -> None:
    """TrainingFolderError if ``folder`` has visible content but no dataset.json: it is not ours."""
    if (folder / DATASET_JSON).exists() or (folder / DATASET_JSON).is_symlink() or not folder.is_dir():
        return
    visible = [p.name for p in folder.iterdir() if not p.name.startswith(".")
               and not (p.name in (IMAGES_DIR, LABELS_DIR) and p.is_dir()
                        and all(q.name.startswith(".") for q in p.iterdir()))]
    if visible:
        raise TrainingFolderError(f"{folder} is not empty ({', '.join(sorted(visible)[:3])}...) and has no "
                                  f"{DATASET_JSON}; choose an empty folder or an existing training folder")


def export_frames(folder, task: str, frames: Iterable[Frame], progress: Callable | None = None,
                  cancel=None, replace_images: bool = False) -> list:
    """Write ``frames`` as cases of the training folder ``folder`` (created if needed) for ``task``.

    Each frame becomes case ``case_id(source, frame_index)``: a new case, or a replacement of
    that case; cases of other frames are not touched. A case whose stored image differs from the
    frame's (another video under the same source name, say) is replaced only with
    ``replace_images``; otherwise the export stops there with CaseImageConflict. A frame identical to its case (pixels,
    geometry, source, model version) leaves the case as it is, time included, so exporting
    twice gives the same folder. ``progress(done, total)`` is called after each frame (total is
    None if ``frames`` has no length); ``cancel`` (a callable or threading.Event) is checked
    before each frame. Returns the case IDs of the exported frames, in order.

    Raises TrainingFolderError (a ValueError) for a folder that cannot be written (unwritable,
    full, not a training folder, for another task) or an invalid frame, and
    ``Training.predictor.Cancelled`` when cancelled. An exception from ``frames`` is passed on.
    In every case the frames written before are kept and the folder stays valid.
    """
    folder = Path(folder)
    channel_names, labels = _task_layout(task)
    n_channels, n_classes = len(channel_names), len(labels) - 1
    total = len(frames) if hasattr(frames, "__len__") else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(folder, e) from None
    written: list[str] = []
    batch: list[_Pending] = []
    from_frames = False
    _check_not_foreign(folder)  # before the lock file: nothing is left in a folder that is not ours
    with folder_lock(folder, f"another export into {folder} is running; try again when it has finished",
                     TrainingFolderError):
        writer = _Writer(folder, task)
        try:
            writer.open()
            last_commit = time.monotonic()
            iterator = iter(frames)
            while True:
                if _is_cancelled(cancel):
                    from .errors import Cancelled

                    raise Cancelled(f"export cancelled after {len(written)} frames")
                from_frames = True
                try:
                    frame = next(iterator)
                except StopIteration:
                    from_frames = False
                    break
                from_frames = False
                cid, meta, channels, label = _prepare(frame, n_channels, n_classes)
                current = writer.entries.get(cid)
                if current is not None and current.meta.get("source") != meta["source"]:
                    raise TrainingFolderError(
                        f"case {cid} of {folder} holds frame {current.meta.get('frame_index')} of "
                        f"'{current.meta.get('source')}', not of '{meta['source']}'; rename the source")
                other_image, unchanged = writer.compare(cid, meta, channels, label)
                if other_image and not replace_images:
                    raise CaseImageConflict(
                        f"case {cid} of {folder} holds another image for frame {meta['frame_index']} of "
                        f"'{meta['source']}' (another video of the same name?); export it under another name "
                        "(rename the volume in Slicer, or cardioseg export --source NAME), or replace that "
                        "case's image on purpose (cardioseg export --replace)")
                for p in [p for p in batch if p.cid == cid]:  # the same frame twice: the last one wins
                    writer.discard([p])
                    batch.remove(p)
                if not unchanged:
                    meta["time"] = _utc_now()
                    batch.append(writer.write_temps(cid, meta, channels, label))
                if cid in written:
                    written.remove(cid)
                written.append(cid)
                if time.monotonic() - last_commit >= COMMIT_SECONDS:
                    writer.commit(batch)
                    last_commit = time.monotonic()
                if progress:
                    progress(len(written), total)
            writer.commit(batch)
        except (Exception, KeyboardInterrupt) as e:
            # keep the complete cases of this export, then report
            try:
                writer.commit(batch)
            except Exception:
                writer.discard(batch)
            if isinstance(e, OSError) and not from_frames:
                raise _os_error(folder, e) from e
            raise
    return written


# --------------------------------------------------------------------------- label files (CLI)


def _segments(image: sitk.Image) -> list[dict]:
    """Segments of a Slicer .seg.nrrd header: [{name, layer, value}] in file order."""
    keys = set(image.GetMetaDataKeys())
    n_layers = image.GetNumberOfComponentsPerPixel()
    out = []
    n = 0
    while f"Segment{n}_ID" in keys or f"Segment{n}_Name" in keys:
        p = f"Segment{n}_"
        name = image.GetMetaData(p + "Name") if p + "Name" in keys else image.GetMetaData(p + "ID")
        try:
            value = int(image.GetMetaData(p + "LabelValue")) if p + "LabelValue" in keys else 1
            # files from before Slicer 4.11 have no LabelValue/Layer: one layer per segment
            layer = int(image.GetMetaData(p + "Layer")) if p + "Layer" in keys else (n if n_layers > 1 else 0)
        except ValueError:
            raise TrainingFolderError(f"segment '{name}' has an invalid LabelValue or Layer field") from None
        if not 0 <= layer < n_layers:
            raise TrainingFolderError(f"segment '{name}' is on layer {layer} but the file has {n_layers} layer(s)")
        out.append({"name": name, "layer": layer, "value": value})
        n += 1
    return out


def _paste(labels: sitk.Image, reference: sitk.Image, what: str) -> np.ndarray:
    """labels (a scalar image on the reference's grid, or on a block of it, as Slicer writes a
    segmentation cropped to its extent) as an array (K, J, I) of the reference's shape."""
    ref_size = reference.GetSize()
    if (labels.GetDimension() != reference.GetDimension()
            or not np.allclose(labels.GetSpacing(), reference.GetSpacing(), rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)
            or not np.allclose(labels.GetDirection(), reference.GetDirection(), atol=GEOMETRY_ATOL)):
        raise TrainingFolderError(f"{what} has spacing {labels.GetSpacing()} and direction {labels.GetDirection()}; "
                                  f"the image has {reference.GetSpacing()} and {reference.GetDirection()}")
    offset = np.array(reference.TransformPhysicalPointToContinuousIndex(labels.GetOrigin()))
    start = np.round(offset).astype(int)
    size = np.array(labels.GetSize())
    if (not np.allclose(offset, start, atol=1e-3) or np.any(start < 0)
            or np.any(start + size > np.array(ref_size))):
        raise TrainingFolderError(f"{what} (size {tuple(size)}, origin {labels.GetOrigin()}) is not on the image's "
                                  f"voxel grid (size {ref_size}, origin {reference.GetOrigin()})")
    arr = sitk.GetArrayViewFromImage(labels)
    out = np.zeros(ref_size[::-1], dtype=arr.dtype)
    sl = tuple(slice(s, s + n) for s, n in zip(start[::-1], size[::-1]))
    out[sl] = arr
    return out


def labels_from_file(path, reference: sitk.Image, classes) -> tuple[np.ndarray, list]:
    """Label map (K, J, I) uint8 of the 3D image ``reference`` from a label file.

    ``path`` is a Slicer ``.seg.nrrd`` (its segments are mapped to ``classes`` by name, using
    the ``SegmentN_Name``, ``SegmentN_LabelValue`` and ``SegmentN_Layer`` header fields; one or
    several layers) or a labelmap image (integer values 0..len(classes)). It must be on the
    reference's voxel grid, or on a block of it. Returns (labels, notes): notes name the
    segments that match no class. Raises TrainingFolderError.
    """
    from .imagefiles import as_frames_image, read_image

    path = Path(path)
    img = read_image(path)
    names = [c["name"] for c in classes]
    notes = []
    if path.name.lower().endswith(".seg.nrrd") or img.HasMetaDataKey("Segment0_ID"):
        segments = _segments(img)
        if not segments:
            raise TrainingFolderError(f"{path.name} has no segments (no Segment0_Name field); "
                                      "is it a Slicer .seg.nrrd?")
        layers = [sitk.VectorIndexSelectionCast(img, i) for i in range(img.GetNumberOfComponentsPerPixel())] \
            if img.GetNumberOfComponentsPerPixel() > 1 else [img]
        layers = [_paste(as_frames_image(lay), reference, path.name) for lay in layers]
        out = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
        used = set()
        for k, name in enumerate(names, start=1):
            match = [s for s in segments if s["name"] == name] or \
                    [s for s in segments if s["name"].strip().lower() == name.lower()]
            if len(match) > 1:
                raise TrainingFolderError(f"{path.name} has {len(match)} segments named '{name}'")
            if not match:
                continue
            s = match[0]
            used.add(id(s))
            mask = layers[s["layer"]] == s["value"]
            clash = mask & (out > 0)
            if clash.any():
                other = names[int(out[clash][0]) - 1]
                raise TrainingFolderError(f"segments '{name}' and '{other}' of {path.name} overlap in "
                                          f"{int(clash.sum())} voxels; a training label has one class per pixel")
            out[mask] = k
        if not used:
            raise TrainingFolderError(f"no segment of {path.name} ({', '.join(s['name'] for s in segments)}) is "
                                      f"named like a class of this task ({', '.join(names)})")
        ignored = [s["name"] for s in segments if id(s) not in used]
        if ignored:
            notes.append(f"ignored segment(s) that are not classes of this task: {', '.join(ignored)}")
        return out, notes
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise TrainingFolderError(f"{path.name} has {img.GetNumberOfComponentsPerPixel()} components per pixel; "
                                  "a labelmap has one")
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind not in "uib":
        raise TrainingFolderError(f"{path.name} has pixel type {arr.dtype}; a labelmap has integer values")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > len(classes)):
        raise TrainingFolderError(f"{path.name} has values {int(arr.min())}..{int(arr.max())}; labels of this task "
                                  f"are 0 (background)..{len(classes)} ({', '.join(names)})")
    img = as_frames_image(sitk.Cast(img, sitk.sitkUInt8))
    return _paste(img, reference, path.name), notes
