"""HeartSeg's Logic: the whole heart in chest CT ("heart-ct") and LV, myocardium and left atrium
in apical echo ("echo"), the task chosen or detected from the volume, and the task's
measurements (no Qt; see CardioSegLib.logic)."""
from __future__ import annotations

from Training.tasks import get_task

from .logic import SegmentationLogic
from .scene import labels_from_segmentation
from .segment import detect_task

TASKS = ("heart-ct", "echo")
AUTO = "auto"  # the choice "detect the task from the volume"; not a task


class HeartSegmentationLogic(SegmentationLogic):
    """Task detection, segmentation, measurements, review and export for heart CT and echo;
    usable without the GUI, e.g. from the Python console (see SegmentationLogic)."""

    MODULE_NAME = "HeartSeg"
    TASKS = TASKS
    TASK = None  # the caller chooses, or AUTO detects

    def resolveTask(self, task, volume, modality=None) -> tuple:
        """(task, reason): ``task`` itself, or for AUTO (or none) the task detected from the
        volume (CardioSegLib.segment.detect_task, with the DICOM ``modality`` if known).
        ValueError for an unknown task or no volume; InputError when it cannot tell."""
        if task in (None, "", AUTO):
            if volume is None:
                raise ValueError("no input volume")
            return detect_task(volume, modality=modality)
        if task not in self.TASKS:
            raise ValueError(f"unknown task '{task}'; HeartSeg runs {', '.join(self.TASKS)}")
        return task, "chosen"

    def process(self, inputNode, outputSegmentation=None, task=AUTO, modelPath=None, device="cpu", batch=8,
                progress=None, cancel=None, modality=None, adaptBn=False):
        """Segment every slice (CT) or frame (echo) of inputNode into outputSegmentation (created if None).

        task: "heart-ct", "echo" or AUTO (detected, with the DICOM ``modality`` if given).
        adaptBn: re-estimate the model's BatchNorm statistics on this input first (test-time adaptation).
        progress(done, total) is called after each batch; cancel() returning True stops the run
        (Training.errors.Cancelled; the scene is unchanged).
        Returns (segmentationNode, stats) with stats "frames", "seconds", "frames_per_second",
        "task", "task_reason" and, when nothing was found, "message".
        """
        if inputNode is None:
            raise ValueError("no input volume")
        task, reason = self.resolveTask(task, inputNode, modality)
        segmentation, stats = self.runModel(inputNode, outputSegmentation, task=task, modelPath=modelPath,
                                            device=device, batch=batch, progress=progress, cancel=cancel,
                                            adapt_bn=bool(adaptBn))
        return segmentation, dict(stats, task=task, task_reason=reason)

    def measure(self, segmentation, volume, task) -> dict:
        """The task's measurements (Training.tasks: ``Task.measure``) of the segmentation on the
        volume's voxel grid, with "task": heart-ct {"volumes_ml": {segment name: mL}}; echo
        {"area_mm2" (one per frame), "ed_frame", "es_frame" (int or None), "message" ("" or why
        ED/ES are missing)}. ValueError for a task without measurements."""
        if task not in self.TASKS:
            raise ValueError(f"unknown task '{task}'; HeartSeg measures {', '.join(self.TASKS)}")
        spec = get_task(task)
        if spec.measure is None:
            raise ValueError(f"the {task} task has no measurements")
        classes = list(spec.classes)
        labels = labels_from_segmentation(segmentation, volume, classes)
        spacingZYX = tuple(reversed(volume.GetSpacing()))
        return dict(spec.measure(labels, spacingZYX, classes), task=task)
