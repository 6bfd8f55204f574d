"""Segment a volume or sequence node with a CardioSeg model file (no Qt).

scene node -> frames (T, H, W), or (T, H, W, 3) for colour -> Training.predictor.Predictor
-> uint8 labels (T, H, W) -> segmentation node (volume input) or sequence of segmentation nodes
(sequence input), in the input's geometry.
"""
from __future__ import annotations

import numpy as np

from Training.errors import InputError
from Training.tasks import TASKS
from Training.tasks import detect_task as detect_task_of_frames

from .export import MODEL_VERSION_ATTRIBUTE, TASK_ATTRIBUTE
from .geometry import lps_direction
from .reviewstates import clear_review_states, set_uncertainty
from .scene import frames_from_node, write_segmentation, write_segmentation_sequence
from .sequencebrowser import primary_sequence


def segment_node(input_node, model_path, task, segmentation_node=None, device="cpu", batch=8,
                 threshold=None, keep_largest=0, progress=None, cancel=None, browser=None, adapt_bn=False):
    """Run the model on ``input_node`` and write the result into the scene.

    Args:
        input_node: a scalar volume (grey tasks) or an RGB vector volume (colour tasks, e.g.
            "instruments") whose slices are frames, a vtkMRMLSequenceNode of single-slice 2D
            volumes of either kind, or a vtkMRMLSequenceBrowserNode.
        model_path: CardioSeg ``.safetensors`` model file; task: the task it must be for.
        segmentation_node: a previous result to overwrite (its segments are replaced).
        adapt_bn: re-estimate the model's BatchNorm statistics on this input first (test-time
            adaptation, for images unlike the training images).
        device, batch, threshold, keep_largest: passed to Predictor.
        progress: ``progress(done, total)`` after each batch of frames.
        cancel: callable or threading.Event; when set, Cancelled is raised.
        browser: for a sequence input, a browser that plays it along: the result is synchronized
            to it (a browser input is its own; see ``sequencebrowser.segmentation_input``).

    Returns (output node, stats): for a volume the vtkMRMLSegmentationNode; for a sequence
    the vtkMRMLSequenceNode of segmentation nodes (one per frame, same index values; for a
    browser it is synchronized to the browser). ``stats`` is ``Predictor.stats``; its
    "message" says so when nothing was found (the segments are then empty).
    The output node gets attributes "CardioSeg.ModelVersion" and "CardioSeg.Task", loses its
    review marks (they were about the labels replaced) and gets each frame's uncertainty
    (``reviewstates.set_uncertainty``; the review goes to the least certain frame first).

    A grey input to a colour task, or a colour input to a grey task, raises InputError (see
    ``check_channels``): nothing is averaged or replicated into the other kind.
    InputError, Cancelled and ModelFileError propagate unchanged; the scene is only written
    after prediction has finished, so on any of them a given segmentation_node is untouched.
    """
    from Training.predictor import Predictor  # torch: only when segmenting, not for detect_task

    frames, reference = frames_from_node(input_node)
    check_channels(frames, task, input_node)  # before the model is loaded: a quick, clear refusal
    predictor = Predictor(model_path, task=task, device=device, batch=batch, threshold=threshold,
                          keep_largest=keep_largest, adapt_bn=adapt_bn)
    labels = predictor.predict(frames, progress=progress, cancel=cancel, direction=lps_direction(reference))
    classes = predictor.spec.classes
    if input_node.IsA("vtkMRMLSequenceNode") or input_node.IsA("vtkMRMLSequenceBrowserNode"):
        out = write_segmentation_sequence(labels, input_node, classes, segmentation_node, browser=browser)
    else:
        out = write_segmentation(labels, reference, classes, segmentation_node)
    out.SetAttribute(MODEL_VERSION_ATTRIBUTE, str(predictor.spec.version))
    out.SetAttribute(TASK_ATTRIBUTE, predictor.spec.task)
    clear_review_states(out)  # the labels the marks were about are gone: the review starts again
    if predictor.stats.get("uncertainty") is not None:
        frames_of_states = len(labels) if out.IsA("vtkMRMLSequenceNode") else input_node
        set_uncertainty(out, predictor.stats["uncertainty"], frames_of_states)
    return out, predictor.stats


def _channel_message(components: int, task: str | None, name: str) -> str:
    """Why ``components`` per pixel do not fit ``task`` ("" when they do, or the task is unknown)."""
    spec = TASKS.get(task) if task else None
    if spec is None:
        return ""
    if spec.in_channels > 1 and components == 1:
        return (f"{name} is grey (one value per pixel), but the {spec.name} task segments colour "
                f"({', '.join(spec.channel_names)}) video frames; load the video in colour (a vector volume) "
                "or choose a grey task")
    if spec.in_channels == 1 and components > 1:
        colour_tasks = " or ".join(t.name for t in TASKS.values() if t.in_channels > 1)
        return (f"{name} is colour ({components} components per pixel), but the {spec.name} task segments "
                f"grey frames; colour video is for the {colour_tasks} task")
    return ""


def check_channels(frames: np.ndarray, task: str | None, node=None) -> None:
    """Refuse frames of the wrong kind for ``task`` with a one-line InputError naming the node:
    grey frames (T, H, W) for a colour task (``in_channels`` 3), colour frames (T, H, W, C) for
    a grey task. Nothing is averaged or replicated into the other kind. Unknown tasks (or None)
    are left to the model file's own check (the predictor's)."""
    name = f"'{node.GetName()}'" if node is not None else "the input"
    message = _channel_message(frames.shape[-1] if frames.ndim == 4 else 1, task, name)
    if message:
        raise InputError(message)


def channel_problem(node, task: str | None) -> str:
    """For the GUI, before anything runs: why ``node`` (a volume, a sequence or a browser; its
    first item for those) is the wrong kind (grey or colour) for ``task``, or "" when it fits
    or cannot be told yet (no node, no image data). Reads no voxels."""
    item = node
    if item is not None and item.IsA("vtkMRMLSequenceBrowserNode"):
        item = primary_sequence(item)
    if item is not None and item.IsA("vtkMRMLSequenceNode"):
        item = item.GetNthDataNode(0) if item.GetNumberOfDataNodes() else None
    image = item.GetImageData() if item is not None and item.IsA("vtkMRMLVolumeNode") else None
    if image is None:
        return ""
    return _channel_message(image.GetNumberOfScalarComponents(), task, f"'{node.GetName()}'")


def detect_task(input_node, modality: str | None = None) -> tuple[str, str]:
    """HeartSeg's task for a node: ("heart-ct" or "echo", why). ``modality``: the DICOM Modality
    if known. Raises InputError (e.g. colour frames, or values neither CT nor echo)."""
    frames, _reference = frames_from_node(input_node)
    return detect_task_of_frames(frames, modality)
