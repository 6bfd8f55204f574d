"""Reviewed frames of a segmentation -> training folder, and a case of a training folder -> scene.

The training folder itself (nnU-Net v2 raw layout, manifest, atomic and idempotent writes,
integrity checks) belongs to ``Training.trainingfolder``, which has the one writer
(``export_frames``) and the one reader (``read_training_folder``). This module only turns scene
nodes into ``Frame`` records and back.

Colour: an RGB vector volume's frame k is exported as an (H, W, 3) image, which the training
folder stores as one file per channel (``{case}_0000`` R, ``_0001`` G, ``_0002`` B, named in
``dataset.json``); ``load_case`` brings such a case back as a vector volume. A video given as a
sequence (or browser) of single-slice frames is exported item by item from its segmentation
sequence (``segment.segment_node``'s output), frame index = item number.

Geometry: a frame's LPS origin, spacing and direction, and back to RAS, are ``geometry``'s
(``frame_geometry_lps``, ``ijk_to_ras_from_lps``).

MRML only (no Qt, no ``slicer.app``/``slicer.modules``): runs in Slicer and on slicer-core.
"""
from __future__ import annotations

import numpy as np

from .geometry import frame_count, frame_geometry_lps, frame_reference, ijk_to_ras_from_lps, ijk_to_world
from .reviewstates import REVIEWED, frames_in_state
from .sequencebrowser import is_sequence, primary_sequence

MODEL_VERSION_ATTRIBUTE = "CardioSeg.ModelVersion"
TASK_ATTRIBUTE = "CardioSeg.Task"
# On a volume loaded from a training folder: the case's source name and frame index, so that
# exporting it again replaces that case instead of adding a new one.
SOURCE_ATTRIBUTE = "CardioSeg.Source"
FRAME_INDEX_ATTRIBUTE = "CardioSeg.FrameIndex"


def _check_components(volume, task: str) -> None:
    """ValueError unless the volume has as many components per voxel as ``task`` has input
    channels (an RGB video exported for a grey task, or grey frames for a colour task)."""
    from Training.tasks import get_task

    t = get_task(task)
    components = volume.GetImageData().GetNumberOfScalarComponents()
    if components != t.in_channels:
        kind = "grey" if components == 1 else f"colour ({components} components)"
        raise ValueError(f"'{volume.GetName()}' is {kind}, but task '{task}' takes {t.in_channels} input "
                         f"channel(s) ({', '.join(t.channel_names)}); export it for a task of its kind")


class ReviewedFrames:
    """The REVIEWED frames of a segmentation as ``Training.trainingfolder.Frame`` records, in
    frame order: sized (so progress has a total) and lazy (one frame's label is exported from
    the segmentation at a time, when it is reached).

    image: the volume's slice k, (H, W) or, for an RGB vector volume, (H, W, 3), original dtype
    and values (a view, nothing else is copied);
    label: uint8 (H, W), the segments of the task's classes exported in that frame's grid;
    geometry: ``frame_geometry_lps``; source: the volume's name (or its "CardioSeg.Source"
    attribute); frame_index: k (plus its "CardioSeg.FrameIndex" attribute); model_version: the
    segmentation's "CardioSeg.ModelVersion" attribute. ``cancel`` is checked before each frame.
    """

    def __init__(self, segmentation_node, volume_node, task: str, cancel=None):
        from Training.tasks import get_task

        self.segmentation_node, self.volume_node, self.cancel = segmentation_node, volume_node, cancel
        self.classes = list(get_task(task).classes)
        _check_components(volume_node, task)
        self.frames = frames_in_state(segmentation_node, volume_node, REVIEWED)
        self.world = ijk_to_world(volume_node)
        frame_geometry_lps(volume_node, 0)  # refuse a sheared grid before anything is written

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        import slicer

        from Training.cancel import raise_if_cancelled
        from Training.trainingfolder import Frame

        from .scene import labels_from_segmentation

        volume, segmentation = self.volume_node, self.segmentation_node
        dims = volume.GetImageData().GetDimensions()
        voxels = slicer.util.arrayFromVolume(volume)  # (K, J, I) or (K, J, I, C) view
        source = volume.GetAttribute(SOURCE_ATTRIBUTE) or volume.GetName()
        first = int(volume.GetAttribute(FRAME_INDEX_ATTRIBUTE) or 0)
        version = segmentation.GetAttribute(MODEL_VERSION_ATTRIBUTE) or ""
        for k in self.frames:
            raise_if_cancelled(self.cancel, "export cancelled")
            label = labels_from_segmentation(segmentation, frame_reference(self.world, dims, k), self.classes)[0]
            origin, spacing, direction = frame_geometry_lps(volume, k)
            yield Frame(image=voxels[k], label=label, origin=origin, spacing=spacing, direction=direction,
                        source=source, frame_index=first + k, model_version=version)


def _sequence_pair(segmentation_node, input_node):
    """(input sequence, segmentation sequence) for a sequence or browser input. The segmentation
    is its sequence of segmentation nodes, or, with a browser, that sequence's proxy node."""
    browser = input_node if input_node.IsA("vtkMRMLSequenceBrowserNode") else None
    if browser is not None:
        sequence = primary_sequence(browser, "export frames of")
    else:
        sequence = input_node
    segmentations = segmentation_node
    if segmentations.IsA("vtkMRMLSegmentationNode") and browser is not None:
        segmentations = browser.GetSequenceNode(segmentation_node)  # a proxy node: its sequence
    if segmentations is None or not segmentations.IsA("vtkMRMLSequenceNode"):
        raise ValueError(f"'{segmentation_node.GetName()}' is not a sequence of segmentations of "
                         f"'{sequence.GetName()}'; export the segmentation sequence that Segment made from it")
    return sequence, segmentations


class ReviewedSequenceFrames:
    """The REVIEWED items of a segmentation sequence over an input sequence of single-slice
    frames (a video), as ``Training.trainingfolder.Frame`` records, like ``ReviewedFrames``.

    Frame k is input item k: image = its voxels (H, W) or (H, W, C), original dtype; label =
    the segmentation item with the same index value, exported in that frame's grid; geometry =
    the frame volume's own (``frame_geometry_lps``); source = the input sequence's name (or its
    "CardioSeg.Source" attribute); frame_index = k; model_version = the segmentation sequence's
    "CardioSeg.ModelVersion" attribute. Review states are those of the segmentation sequence.
    """

    def __init__(self, segmentation_sequence, sequence, task: str, cancel=None):
        from Training.tasks import get_task

        self.segmentation_sequence, self.sequence, self.cancel = segmentation_sequence, sequence, cancel
        self.classes = list(get_task(task).classes)
        self.frames = frames_in_state(segmentation_sequence, sequence, REVIEWED)
        # everything that can be refused is refused here, before the folder is touched
        for k in self.frames:
            frame = sequence.GetNthDataNode(k)
            if frame is None or not frame.IsA("vtkMRMLScalarVolumeNode") or frame.GetImageData() is None:
                raise ValueError(f"sequence '{sequence.GetName()}' item {k} is not an image volume")
            if frame.GetImageData().GetDimensions()[2] != 1:
                raise ValueError(f"sequence '{sequence.GetName()}' item {k} is not a single-slice frame")
            _check_components(frame, task)
            if self._segmentation_item(k) is None:
                raise ValueError(f"'{segmentation_sequence.GetName()}' has no segmentation for frame {k} "
                                 f"(index value {sequence.GetNthIndexValue(k)})")
            frame_geometry_lps(frame, 0)

    def _segmentation_item(self, k: int):
        return self.segmentation_sequence.GetDataNodeAtValue(self.sequence.GetNthIndexValue(k), True)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        import slicer

        from Training.cancel import raise_if_cancelled
        from Training.trainingfolder import Frame

        from .scene import labels_from_segmentation

        sequence = self.sequence
        source = sequence.GetAttribute(SOURCE_ATTRIBUTE) or sequence.GetName()
        version = self.segmentation_sequence.GetAttribute(MODEL_VERSION_ATTRIBUTE) or ""
        for k in self.frames:
            raise_if_cancelled(self.cancel, "export cancelled")
            frame = sequence.GetNthDataNode(k)
            label = labels_from_segmentation(self._segmentation_item(k), frame, self.classes)[0]
            origin, spacing, direction = frame_geometry_lps(frame, 0)
            yield Frame(image=slicer.util.arrayFromVolume(frame)[0], label=label, origin=origin, spacing=spacing,
                        direction=direction, source=source, frame_index=k, model_version=version)


def export_reviewed_frames(segmentation_node, volume_node, folder, task: str, progress=None, cancel=None,
                           replace_images=False) -> list:
    """Write every REVIEWED frame of ``segmentation_node`` over ``volume_node`` into the training
    folder ``folder`` (created if needed) for ``task``; returns the case IDs written.

    ``volume_node``: a scalar or RGB vector volume (frames = slices) with its segmentation node,
    or a sequence / sequence browser of single-slice frames with its segmentation sequence (or,
    for a browser, that sequence's proxy segmentation node). Colour frames are written with
    every channel (the task's ``channel_names``, one file per channel).

    Re-exporting a frame replaces its case (case ID = source name + frame index); cases of
    other sources are not touched. A case that holds another image (another volume of the same
    name) raises ``CaseImageConflict`` unless ``replace_images``. ``progress(done, total)`` and ``cancel`` (callable or
    threading.Event) are passed on to ``Training.trainingfolder.export_frames``.

    Raises ValueError when no frame is marked reviewed or the geometry cannot be exported,
    ``TrainingFolderError`` (a ValueError) for a folder that cannot be written; in every case
    the scene is left as it was and the folder stays valid.
    """
    from Training.trainingfolder import export_frames

    if segmentation_node is None:
        raise ValueError("no segmentation to export")
    if is_sequence(volume_node):
        sequence, segmentations = _sequence_pair(segmentation_node, volume_node)
        if frame_count(sequence) == 0:
            raise ValueError(f"sequence '{sequence.GetName()}' has no frames to export")
        reviewed_in, states_on = sequence, segmentations
    elif volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("no input volume to export frames of")
    else:
        reviewed_in, states_on = volume_node, segmentation_node
    if not frames_in_state(states_on, reviewed_in, REVIEWED):
        raise ValueError(f"no frame of '{states_on.GetName()}' is marked reviewed; "
                         "mark the frames that are correct first")
    # a non-linear transform, a sheared grid or a missing item fails here, before the folder is touched
    if is_sequence(volume_node):
        frames = ReviewedSequenceFrames(states_on, reviewed_in, task, cancel)
    else:
        frames = ReviewedFrames(segmentation_node, volume_node, task, cancel)
    return list(export_frames(folder, task, frames, progress=progress, cancel=cancel, replace_images=replace_images))


def _classes_for(training_folder, task: str | None) -> tuple[str, list]:
    """(task name, classes) for a loaded case: the given task, else the folder's."""
    from Training.tasks import get_task

    task = task or training_folder.task
    if not task:
        raise ValueError(f"{training_folder.folder} does not say which task it is for "
                         "(no CardioSeg manifest); pass task=")
    return task, list(get_task(task).classes)


def load_case(folder, case_id: str, task: str | None = None):
    """Load case ``case_id`` of a training folder into the current scene for review.

    ``task``: the task whose classes (names, colours, terminology) the segments get; default:
    the task the folder was written for.

    Returns (volume node, segmentation node): a single-frame volume with the case's image
    (original dtype; a vtkMRMLVectorVolumeNode with the channels as components, in the
    folder's channel order, for a colour case) and geometry (LPS converted back to RAS), named
    after the case, and a
    segmentation of the task's classes written from the case's label
    (``scene.write_segmentation``), with the case's model version. The volume remembers the
    case's source and frame index (attributes "CardioSeg.Source", "CardioSeg.FrameIndex"), so
    exporting it again replaces that case. The frame starts UNREVIEWED: mark it when it is
    right. Raises KeyError for an unknown case, TrainingFolderError for a bad folder.
    """
    import slicer

    from Training.trainingfolder import read_training_folder

    from .scene import write_segmentation

    training_folder = read_training_folder(folder)
    case = training_folder.case(case_id)  # KeyError for an unknown case
    task, classes = _classes_for(training_folder, task)
    image, label, geometry = training_folder.load(case_id)
    ijk_to_ras = ijk_to_ras_from_lps(geometry["origin"], geometry["spacing"], geometry["direction"])
    colour = image.ndim == 3  # (H, W, C): one component per channel file
    volume = slicer.util.addVolumeFromArray(np.ascontiguousarray(image)[None], ijk_to_ras, name=case_id,
                                            nodeClassName="vtkMRMLVectorVolumeNode" if colour else None)
    if case.source and case.frame_index >= 0:  # not for a case of a dataset made elsewhere
        volume.SetAttribute(SOURCE_ATTRIBUTE, str(case.source))
        volume.SetAttribute(FRAME_INDEX_ATTRIBUTE, str(int(case.frame_index)))
    segmentation = write_segmentation(np.asarray(label, np.uint8)[None], volume, classes,
                                      name=f"{case_id} segmentation")
    segmentation.SetAttribute(MODEL_VERSION_ATTRIBUTE, str(case.model_version or ""))
    segmentation.SetAttribute(TASK_ATTRIBUTE, task)
    return volume, segmentation

