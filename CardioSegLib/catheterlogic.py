"""CatheterSeg's Logic: catheters and guidewires in grey X-ray fluoroscopy ("catheter", the
default) and surgical instruments in colour endoscopic video ("instruments"), on a volume whose
slices are frames or on a video in a sequence browser (no Qt; see CardioSegLib.logic)."""
from __future__ import annotations

from Training.errors import InputError

from .logic import SegmentationLogic
from .segment import channel_problem
from .sequencebrowser import segmentation_input, segmentation_target

TASK = "catheter"  # the default task
TASKS = ("catheter", "instruments")  # the order of the module's task choice


class CatheterSegmentationLogic(SegmentationLogic):
    """Model selection, segmentation, review and export for the catheter (grey fluoroscopy) and
    instruments (colour endoscopic video) tasks; usable without the GUI, e.g. from the Python
    console (see SegmentationLogic for the shared methods)."""

    MODULE_NAME = "CatheterSeg"
    TASKS = TASKS
    TASK = TASK  # the default: process(..., task="instruments") for colour video

    @staticmethod
    def inputProblem(volume, task) -> str:
        """Why ``volume`` (for a browser's proxy volume: its sequence) cannot go to ``task`` (grey
        to instruments, colour to catheter), or "" (also when there is no volume yet). Reads no
        voxels and needs no torch."""
        return channel_problem(segmentation_input(volume)[0], task)

    def process(self, inputNode, outputSegmentation=None, task=None, modelPath=None, device="cpu",
                threshold=0.5, batch=8, progress=None, cancel=None, adaptBn=False):
        """Segment every frame of inputNode into outputSegmentation (created if None).

        inputNode: a volume (frames = slices), a sequence or browser of 2D frames, or the proxy
        volume a browser shows a sequence in: then the whole sequence is segmented, into a
        segmentation sequence synchronized to the browser (CardioSegLib.sequencebrowser.segmentation_input),
        and outputSegmentation may be the proxy segmentation of a previous result.
        task: "catheter" (default; grey frames) or "instruments" (an RGB vector volume, or a
        sequence of RGB frames). modelPath: a model file for that task (default: its bundled
        model; ValueError if there is none). A grey input to "instruments" or a colour input to
        "catheter" raises InputError (a ValueError) before any model is loaded.
        adaptBn: re-estimate the model's BatchNorm statistics on this input first (test-time adaptation).
        progress(done, total) is called after each batch; cancel() returning True stops the run
        (Training.errors.Cancelled; the scene is unchanged).
        Returns (segmentationNode, stats) with stats "frames", "seconds", "frames_per_second",
        "task" and, when nothing was found, "message"; for a sequence, segmentationNode is the
        vtkMRMLSequenceNode of segmentations (one per frame).
        """
        task = self.taskName(task)
        if task not in self.TASKS:
            raise ValueError(f"unknown task '{task}'; CatheterSeg runs {', '.join(self.TASKS)}")
        problem = self.inputProblem(inputNode, task)
        if problem:
            raise InputError(problem)
        node, browser = segmentation_input(inputNode)
        segmentation, stats = self.runModel(node, segmentation_target(outputSegmentation, browser), task=task,
                                            modelPath=modelPath, device=device, batch=batch, progress=progress,
                                            cancel=cancel, threshold=float(threshold), browser=browser,
                                            adapt_bn=bool(adaptBn))
        return segmentation, dict(stats, task=task)
