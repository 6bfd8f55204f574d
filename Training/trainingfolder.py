"""The training folder: its one writer (``export_frames``) and its one reader (``TrainingFolder``).

This module is the public face of the format; the code lives in one file per job:

    folderlayout    file names, case IDs, dataset.json's task keys, geometry checks, errors
    folderreader    ``TrainingFolder`` / ``read_training_folder``: open and check a folder
    folderwriter    ``Frame`` / ``export_frames``: write cases, crash-safe
    labelfiles      ``labels_from_file``: a .seg.nrrd or labelmap read for export

(Flat modules rather than a ``trainingfolder/`` package: the extension's CMakeLists.txt packages
``Training/*.py`` only, so a sub-folder would be missing in Slicer.)

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

from .folderlayout import (DATASET_JSON, FILE_ENDING, FORMAT, FORMAT_VERSION, GEOMETRY_ATOL,  # noqa: F401
                           GEOMETRY_RTOL, IMAGES_DIR, LABELS_DIR, CaseImageConflict, TrainingFolderError, case_id)
from .folderreader import Case, TrainingFolder, read_training_folder  # noqa: F401
from .folderwriter import Frame, export_frames  # noqa: F401
from .labelfiles import labels_from_file  # noqa: F401

__all__ = ["DATASET_JSON", "FILE_ENDING", "FORMAT", "FORMAT_VERSION", "GEOMETRY_ATOL", "GEOMETRY_RTOL", "IMAGES_DIR",
           "LABELS_DIR", "Case", "CaseImageConflict", "Frame", "TrainingFolder", "TrainingFolderError", "case_id",
           "export_frames", "labels_from_file", "read_training_folder"]
