"""The writer of a training folder: ``export_frames`` writes ``Frame`` records as cases.

Crash safety (see ``trainingfolder`` for the whole format): a case's files are written under
temporary names, read back and checked, listed in an atomically replaced dataset.json, then
linked onto their final names; the next export finishes an interrupted one. One export at a time
per folder (``outputfiles.folder_lock``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np
import SimpleITK as sitk

from .cancel import raise_if_cancelled
from .filecheck import IncompleteFileError, check_complete
from .folderlayout import (DATASET_JSON, FILE_ENDING, FORMAT, FORMAT_VERSION, IMAGES_DIR, LABELS_DIR, TEMP_PREFIX,
                           CaseImageConflict, TrainingFolderError, case_id, check_geometry, geometry_close,
                           image_geometry, image_name, label_name, task_layout)
from .folderreader import TrainingFolder
from .outputfiles import folder_lock

# dataset.json is rewritten at most about this often during an export (and at its end); a kill
# loses at most the cases of the last interval, never a case that was already in the folder.
COMMIT_SECONDS = 1.0
_PIXEL_KINDS = "uif"


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



def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.channel_names, self.labels = task_layout(task)
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
        return e.images == [image_name(cid, c) for c in range(len(e.images))] and e.label == label_name(cid)

    def remove_leftovers(self):
        """Delete temporary files that the committed dataset.json does not list (we hold the lock,
        so no other export is writing them)."""
        listed = {p for e in self.entries.values() for p in e.images + [e.label]}
        for d in (self.folder, self.folder / IMAGES_DIR, self.folder / LABELS_DIR):
            for p in d.iterdir():
                rel = p.relative_to(self.folder).as_posix()
                if p.name.startswith(TEMP_PREFIX) and rel not in listed and p.is_file():
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
            tmp = self.folder / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{DATASET_JSON}"
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
            names = [image_name(cid, c) for c in range(len(e.images))] + [label_name(cid)]
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
        tmp = dst.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{dst.name}")
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
                final = label_name(cid) if is_label else image_name(cid, c)
                rel = str(PurePosixPath(final).with_name(f"{TEMP_PREFIX}{token}-{PurePosixPath(final).name}"))
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
                            and geometry_close(image_geometry(back), g))
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
        geometry = check_geometry(frame.origin, frame.spacing, frame.direction)
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


_END = object()  # _Export.next_frame: the frames are exhausted


class _Export:
    """One ``export_frames`` run, under the folder lock: its writer, the case IDs exported so far
    (in order; returned) and the batch of written cases not yet committed. ``from_frames`` is
    True while the caller's frames are asked for the next one: an OSError raised then is theirs
    and is passed on as it is, not reported as the folder's."""

    def __init__(self, writer: _Writer, n_channels: int, n_classes: int, replace_images: bool):
        self.writer, self.n_channels, self.n_classes = writer, n_channels, n_classes
        self.replace_images = replace_images
        self.written: list[str] = []
        self.batch: list[_Pending] = []
        self.from_frames = False

    def run(self, frames: Iterable[Frame], progress: Callable | None, total: int | None, cancel) -> None:
        """Write every frame, committing the batch every COMMIT_SECONDS and at the end. On any
        error or interrupt the complete cases are kept (committed, or else discarded) and the
        error raised, an OSError of the folder as a TrainingFolderError."""
        writer = self.writer
        try:
            writer.open()
            last_commit = time.monotonic()
            iterator = iter(frames)
            while (frame := self.next_frame(iterator, cancel)) is not _END:
                self.add(frame)
                if time.monotonic() - last_commit >= COMMIT_SECONDS:
                    writer.commit(self.batch)
                    last_commit = time.monotonic()
                if progress:
                    progress(len(self.written), total)
            writer.commit(self.batch)
        except (Exception, KeyboardInterrupt) as e:
            # keep the complete cases of this export, then report
            try:
                writer.commit(self.batch)
            except Exception:
                writer.discard(self.batch)
            if isinstance(e, OSError) and not self.from_frames:
                raise _os_error(writer.folder, e) from e
            raise

    def next_frame(self, iterator, cancel):
        """The next frame, or _END when there is none; Cancelled when ``cancel`` is set."""
        raise_if_cancelled(cancel, lambda: f"export cancelled after {len(self.written)} frames")
        self.from_frames = True
        try:
            frame = next(iterator)
        except StopIteration:
            self.from_frames = False
            return _END
        self.from_frames = False
        return frame

    def add(self, frame: Frame) -> None:
        """Check ``frame`` against the case it becomes, write it into the batch unless the case
        already holds it, and list its case ID last in ``written``."""
        writer, folder = self.writer, self.writer.folder
        cid, meta, channels, label = _prepare(frame, self.n_channels, self.n_classes)
        current = writer.entries.get(cid)
        if current is not None and current.meta.get("source") != meta["source"]:
            raise TrainingFolderError(
                f"case {cid} of {folder} holds frame {current.meta.get('frame_index')} of "
                f"'{current.meta.get('source')}', not of '{meta['source']}'; rename the source")
        other_image, unchanged = writer.compare(cid, meta, channels, label)
        if other_image and not self.replace_images:
            raise CaseImageConflict(
                f"case {cid} of {folder} holds another image for frame {meta['frame_index']} of "
                f"'{meta['source']}' (another video of the same name?); export it under another name "
                "(rename the volume in Slicer, or cardioseg export --source NAME), or replace that "
                "case's image on purpose (cardioseg export --replace)")
        for p in [p for p in self.batch if p.cid == cid]:  # the same frame twice: the last one wins
            writer.discard([p])
            self.batch.remove(p)
        if not unchanged:
            meta["time"] = _utc_now()
            self.batch.append(writer.write_temps(cid, meta, channels, label))
        if cid in self.written:
            self.written.remove(cid)
        self.written.append(cid)


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
    channel_names, labels = task_layout(task)
    n_channels, n_classes = len(channel_names), len(labels) - 1
    total = len(frames) if hasattr(frames, "__len__") else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(folder, e) from None
    _check_not_foreign(folder)  # before the lock file: nothing is left in a folder that is not ours
    with folder_lock(folder, f"another export into {folder} is running; try again when it has finished",
                     TrainingFolderError):
        export = _Export(_Writer(folder, task), n_channels, n_classes, replace_images)
        export.run(frames, progress, total, cancel)
    return export.written
