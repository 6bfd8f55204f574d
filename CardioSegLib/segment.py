"""Segment a volume or sequence node with a CardioSeg model file (no Qt).

scene node -> frames (T, H, W) -> Training.predictor.Predictor -> uint8 labels (T, H, W)
-> segmentation node (volume input) or sequence of segmentation nodes (sequence input).
"""
from __future__ import annotations

import numpy as np
import vtk

from Training.tasks import detect_task as detect_task_of_frames

from .scene import frames_from_node, write_segmentation, write_segmentation_sequence


def segment_node(input_node, model_path, task, segmentation_node=None, device="cpu", batch=8,
                 threshold=None, keep_largest=0, progress=None, cancel=None):
    """Run the model on ``input_node`` and write the result into the scene.

    Args:
        input_node: a scalar (or vector) volume whose slices are frames, a vtkMRMLSequenceNode
            of 2D volumes, or a vtkMRMLSequenceBrowserNode.
        model_path: CardioSeg ``.safetensors`` model file; task: the task it must be for.
        segmentation_node: a previous result to overwrite (its segments are replaced).
        device, batch, threshold, keep_largest: passed to Predictor.
        progress: ``progress(done, total)`` after each batch of frames.
        cancel: callable or threading.Event; when set, Cancelled is raised.

    Returns (output node, stats): for a volume the vtkMRMLSegmentationNode; for a sequence
    the vtkMRMLSequenceNode of segmentation nodes (one per frame, same index values; for a
    browser input it is synchronized to the browser). ``stats`` is ``Predictor.stats``; its
    "message" says so when nothing was found (the segments are then empty).
    The output node gets attributes "CardioSeg.ModelVersion" and "CardioSeg.Task".

    InputError, Cancelled and ModelFileError propagate unchanged; the scene is only written
    after prediction has finished, so on any of them a given segmentation_node is untouched.
    """
    from Training.predictor import Predictor  # torch: only when segmenting, not for detect_task

    frames, reference = frames_from_node(input_node)
    predictor = Predictor(model_path, task=task, device=device, batch=batch, threshold=threshold,
                          keep_largest=keep_largest)
    labels = predictor.predict(frames, progress=progress, cancel=cancel, direction=lps_direction(reference))
    classes = predictor.spec.classes
    if input_node.IsA("vtkMRMLSequenceNode") or input_node.IsA("vtkMRMLSequenceBrowserNode"):
        out = write_segmentation_sequence(labels, input_node, classes, segmentation_node)
    else:
        out = write_segmentation(labels, reference, classes, segmentation_node)
    out.SetAttribute("CardioSeg.ModelVersion", str(predictor.spec.version))
    out.SetAttribute("CardioSeg.Task", predictor.spec.task)
    return out, predictor.stats


def lps_direction(volume) -> np.ndarray:
    """3x3 directions of the volume's i, j, k axes in LPS (columns), as SimpleITK gives them."""
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASDirectionMatrix(m)
    ras = np.array([[m.GetElement(r, c) for c in range(3)] for r in range(3)])
    return np.diag([-1.0, -1.0, 1.0]) @ ras


def detect_task(input_node, modality: str | None = None) -> tuple[str, str]:
    """HeartSeg's task for a node: ("heart-ct" or "echo", why). ``modality``: the DICOM Modality
    if known. Raises InputError (e.g. colour frames, or values neither CT nor echo)."""
    frames, _reference = frames_from_node(input_node)
    return detect_task_of_frames(frames, modality)
