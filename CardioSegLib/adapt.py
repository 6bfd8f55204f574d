"""Adapt to reviewed frames: fine-tune the model on the frames the user reviewed, in a background
process, install the result as a user model and re-segment the frames not yet reviewed.

``start_adaptation`` exports the reviewed frames (the one folder writer) into a work folder and
starts ``python -m Training train`` on them as a separate process, so Slicer stays responsive;
``AdaptationJob.poll`` reads its progress from the process's log, ``cancel`` stops it.
``finish_adaptation`` installs the model it wrote (``Training.usermodels``) and segments the
unreviewed frames with it; reviewed and excluded frames keep their labels and their marks.
MRML only (no Qt); torch is imported only when segmenting. Inputs: a volume whose slices are the
frames, or a video (a sequence of single-slice frames, given as its browser's proxy volume and proxy
segmentation, or as the two sequences), whose review states live on the segmentation sequence.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from .export import MODEL_VERSION_ATTRIBUTE, export_reviewed_frames
from .reviewstates import EXCLUDED, REVIEWED, review_states, set_uncertainty, uncertainties
from .sequencebrowser import browser_of_proxy, review_nodes

from Training.tasks import ADAPT_SETTINGS

EPOCHS = ADAPT_SETTINGS["epochs"]  # as `cardioseg adapt`
_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)")


def python_executable() -> str:
    """The Python that runs Training: Slicer's PythonSlicer next to the application, else this one."""
    here = Path(sys.executable)
    if here.name.lower().startswith("slicer"):
        for candidate in (here.parent / "PythonSlicer", here.parent / "PythonSlicer.exe",
                          here.parent.parent / "bin" / "PythonSlicer"):
            if candidate.is_file():
                return str(candidate)
    return sys.executable


class AdaptationJob:
    """A fine-tune running in its own process. ``poll()`` -> (epochs done, epochs, finished);
    ``error`` holds the process's last line when it failed."""

    def __init__(self, process, work: Path, model_out: Path, epochs: int, task: str):
        self.process, self.work, self.model_out, self.epochs, self.task = process, work, model_out, epochs, task
        self.log = work / "train.log"
        self.error = None

    def poll(self):
        done = 0
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            m = _EPOCH_LINE.match(line)
            if m:
                done = int(m.group(1))
        code = self.process.poll()
        if code is not None and code != 0 and self.error is None:
            lines = [x for x in text.splitlines() if x.strip()]
            self.error = lines[-1] if lines else f"training stopped (exit code {code})"
        return done, self.epochs, code is not None

    def wait(self, timeout=None) -> int:
        return self.process.wait(timeout)

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def succeeded(self) -> bool:
        return self.process.poll() == 0 and self.model_out.is_file()


def start_adaptation(segmentation, volume, task: str, model_path, work_folder, epochs: int = EPOCHS,
                     lr: float = ADAPT_SETTINGS["lr"], batchnorm: str = ADAPT_SETTINGS["batchnorm"],
                     encoder_lr: float | None = ADAPT_SETTINGS["encoder_lr"]) -> AdaptationJob:
    """Export the reviewed frames of ``segmentation`` into a training folder under ``work_folder``
    (one subfolder per model, frames and settings) and start fine-tuning ``model_path`` on them
    in a background process. ValueError when nothing is reviewed or there are no frames."""
    frames, states_node = _review_pair(segmentation, volume)
    reviewed = [k for k, s in enumerate(review_states(states_node, frames)) if s == REVIEWED]
    if not reviewed:
        raise ValueError("no frame is marked reviewed: correct a few frames and mark them first")
    key = f"{frames.GetName()}|{reviewed}|{Path(model_path).resolve()}|{epochs}|{lr}|{batchnorm}" + (
        "" if encoder_lr is None else f"|{encoder_lr}")  # unset: the folder of an Adapt from before the option
    work = Path(work_folder) / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    work.mkdir(parents=True, exist_ok=True)
    export_reviewed_frames(states_node, frames, work / "data", task, replace_images=True)
    out = work / "model.safetensors"
    cmd = [python_executable(), "-m", "Training", "train", "--data", str(work / "data"), "--task", task,
           "--init", str(model_path), "--epochs", str(epochs), "--lr", str(lr), "--batchnorm", batchnorm,
           "--val-fraction", "0", "--out", str(out), "--ckpt", str(work / "ckpt")]
    if encoder_lr is not None:
        cmd += ["--encoder-lr", str(encoder_lr)]
    log = open(work / "train.log", "w")
    try:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(_repository_root()),
                                   env=_environment())
    finally:
        log.close()  # the child holds its own handle
    return AdaptationJob(process, work, out, epochs, task)


def _review_pair(segmentation, volume):
    """(frames, node holding the review states): a video's two sequences (``review_nodes``: from a
    browser's proxy volume and segmentation), or the volume and segmentation as given."""
    if segmentation is None or volume is None:
        raise ValueError("Adapt needs the input and its segmentation")
    if volume.IsA("vtkMRMLSequenceNode") and segmentation.IsA("vtkMRMLSequenceNode"):
        return volume, segmentation
    if not volume.IsA("vtkMRMLVolumeNode"):
        raise ValueError(f"'{volume.GetName()}' is neither a volume of frames nor a video in a sequence browser")
    frames, states_node = review_nodes(volume, segmentation)
    if frames.IsA("vtkMRMLVolumeNode") and browser_of_proxy(volume) is not None:
        raise ValueError(f"'{segmentation.GetName()}' is not the segmentation sequence of the video "
                         f"'{volume.GetName()}' shows; segment the video first")
    return frames, states_node


def _repository_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _environment() -> dict:
    import os

    env = dict(os.environ)
    root = str(_repository_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def finish_adaptation(job: AdaptationJob, segmentation, volume, models_folder=None, progress=None, cancel=None):
    """Install the adapted model and segment the frames not reviewed or excluded with it; those
    frames get new labels and uncertainties, the others keep theirs. Returns (installed model
    path, stats: "frames" segmented, "seconds", "reviewed")."""
    from Training.modelfile import read_spec
    from Training.predictor import Predictor
    from Training.tasks import get_task
    from Training.usermodels import install_model

    from .geometry import lps_direction
    from .scene import frames_from_node, labels_from_segmentation, write_segmentation, write_segmentation_sequence

    if not job.succeeded:
        raise ValueError(f"the fine-tune did not finish: {job.error or 'still running'}")
    frames_node, states_node = _review_pair(segmentation, volume)
    video = frames_node.IsA("vtkMRMLSequenceNode")
    installed = install_model(job.model_out, task=job.task, folder=models_folder)
    classes = list(get_task(job.task).classes)
    states = review_states(states_node, frames_node)
    rest = [k for k, s in enumerate(states) if s not in (REVIEWED, EXCLUDED)]
    frames, reference = frames_from_node(frames_node)
    if video:  # item k's labels, in frame k's grid
        labels = np.concatenate([labels_from_segmentation(
            states_node.GetDataNodeAtValue(frames_node.GetNthIndexValue(k), True), frames_node.GetNthDataNode(k),
            classes) for k in range(len(frames))])
    else:
        labels = labels_from_segmentation(segmentation, volume, classes)
    values = uncertainties(states_node, frames_node)
    stats = {"frames": len(rest), "seconds": 0.0, "reviewed": len(states) - len(rest)}
    if rest:
        p = Predictor(installed, task=job.task)
        labels[rest] = p.predict(np.ascontiguousarray(frames[rest]), progress=progress, cancel=cancel,
                                 direction=lps_direction(reference))
        stats["seconds"] = p.stats["seconds"]
        new = p.stats.get("uncertainty")
        for i, k in enumerate(rest):
            values[k] = None if new is None else new[i]
    if video:  # the sequence node's attributes (the marks) stay; its browser keeps playing it
        write_segmentation_sequence(labels, frames_node, classes, states_node, browser=browser_of_proxy(volume))
    else:
        write_segmentation(labels, volume, classes, segmentation)  # the node's attributes (the marks) stay
    set_uncertainty(states_node, values, frames_node)
    states_node.SetAttribute(MODEL_VERSION_ATTRIBUTE, str(read_spec(installed).version))
    return installed, stats
