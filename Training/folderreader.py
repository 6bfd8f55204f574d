"""The reader of a training folder: ``TrainingFolder`` opens and checks one, ``read_training_folder``.

The format is described in ``trainingfolder``; names and geometry checks are in ``folderlayout``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import SimpleITK as sitk

from .filecheck import check_complete
from .folderlayout import (DATASET_JSON, FORMAT, FORMAT_VERSION, IMAGES_DIR, LABELS_DIR,
                           TrainingFolderError, check_geometry, geometry_3d, geometry_close, inside, plain_id)


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
        json_path = inside(self._root, DATASET_JSON, self.folder, "dataset.json")
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
            plain_id(cid, f"{self.folder}: ")
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
                inside(self._root, d, self.folder, d)
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
        full = inside(self._root, rel, self.folder, what)
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
        geom = geometry_3d(headers[0])
        size = tuple(headers[0].GetSize()[:2])
        for p, h in list(zip(images, headers))[1:] + [(label, lab)]:
            if tuple(h.GetSize()[:2]) != size:
                raise TrainingFolderError(f"{f}: case {cid}: {p.relative_to(f)} has size {tuple(h.GetSize()[:2])} "
                                          f"but {images[0].relative_to(f)} has {size}")
            if not geometry_close(geometry_3d(h), geom):
                raise TrainingFolderError(f"{f}: case {cid}: the geometry (origin, spacing, direction) of "
                                          f"{p.relative_to(f)} differs from {images[0].relative_to(f)}")
        if sitk.GetPixelIDValueAsString(lab.GetPixelID()).endswith("float"):
            raise TrainingFolderError(f"{f}: case {cid}: label {label.relative_to(f)} is not an integer map")
        if entry is not None:
            entry = self._check_entry(cid, entry)
            if not geometry_close(entry["geometry"], geom):
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
            geometry = check_geometry(g["origin"], g["spacing"], g["direction"])
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
