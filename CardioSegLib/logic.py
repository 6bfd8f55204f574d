"""The Logic the CardioSeg modules share: model files, segmentation, review and export of the
tasks of one module, on the MRML scene (no Qt, no application).

``SegmentationLogic`` is a plain class, so the self-tests, the Python console and the pytest
suites on slicer-core use it as it is; a module combines it with ScriptedLoadableModuleLogic
for its parameter node (``class CatheterSegLogic(ScriptedLoadableModuleLogic,
CatheterSegmentationLogic)``). What is only a call of a CardioSegLib function (the review marks,
the frames of a sequence, the geometry of a frame) is called directly, e.g.
``CardioSegLib.reviewstates.set_review_state``; this class holds what adds something to it: the
module's tasks and default task, the model file choice, the review-mark reset after a new run,
the export task.

Importing this file imports neither torch nor the model code (``Training.predictor``,
``Training.modelfile``): they are imported inside the functions that need them.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import slicer

from Training.tasks import get_task
from Training.trainingfolder import read_training_folder
from Training.usermodels import check_model, install_model, list_models

from .adapt import EPOCHS as ADAPT_EPOCHS
from .adapt import finish_adaptation, start_adaptation
from .export import TASK_ATTRIBUTE, export_reviewed_frames, load_case
from .geometry import frame_at_ras, shows_frames
from .reviewstates import STATES, review_states
from .segment import segment_node
from .sequencebrowser import proxy_node


class SegmentationLogic:
    """Model files, segmentation, review and export for the tasks of one module.

    Subclasses set MODULE_NAME, TASKS and TASK (the default task, or None when the caller must
    choose), and define ``process``.
    """

    MODULE_NAME = ""
    TASKS = ()
    TASK = None

    # --- tasks and model files ---

    @classmethod
    def taskName(cls, task=None) -> str:
        """``task``, else the module's default; ValueError when there is neither."""
        name = task or cls.TASK
        if not name:
            raise ValueError(f"{cls.MODULE_NAME}: choose a task ({', '.join(cls.TASKS)})")
        return name

    @classmethod
    def task(cls, name=None):
        """Training.tasks.Task of ``name`` (default: the module's task)."""
        return get_task(cls.taskName(name))

    @classmethod
    def bundledModelPath(cls, task=None) -> Path:
        """The model shipped with the module (Training.tasks finds it in source and installed trees);
        the file may be missing in a build without it."""
        return Path(cls.task(task).bundled_model)

    @classmethod
    def userModels(cls, folder=None, task=None) -> list:
        """Installed models of the task (Training.usermodels.InstalledModel), newest first; broken
        files are included, with their error."""
        return list_models(task=cls.taskName(task), folder=folder)

    @classmethod
    def checkModelFile(cls, path, task=None):
        """Spec of a model file that loads; raises (ModelFileError or ValueError) unless it is for
        the task (default: the module's)."""
        return check_model(path, task=cls.taskName(task))

    def storeUserModel(self, path, folder=None, task=None) -> Path:
        """Check a model file and install it into the user models folder (Training.usermodels:
        never over a different file, never into the bundled models folder). Without a task, the
        file may be for any of the module's tasks."""
        if task is None and self.TASK is None:
            from Training.modelfile import read_spec  # torch

            task = read_spec(path).task
            if task not in self.TASKS:
                raise ValueError(f"{Path(path).name} is a model for task '{task}'; "
                                 f"{self.MODULE_NAME} runs {', '.join(self.TASKS)}")
        return install_model(path, task=self.taskName(task), folder=folder)

    @staticmethod
    def cudaAvailable() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def runModel(self, inputNode, outputSegmentation=None, task=None, modelPath=None, device="cpu", batch=8,
                 progress=None, cancel=None, **options):
        """Segment every frame of inputNode into outputSegmentation (created if None) with the model
        file (default: the task's bundled model); ``options`` go to CardioSegLib.segment.segment_node.

        progress(done, total) is called after each batch; cancel() returning True stops the run
        (Training.errors.Cancelled, and the scene is unchanged). Returns (segmentationNode, stats)
        with stats "frames", "seconds", "frames_per_second" and, when nothing was found, "message".
        A given outputSegmentation loses its review marks: they were about the labels replaced.
        """
        if inputNode is None:
            raise ValueError("no input volume")
        task = self.taskName(task)
        model = Path(modelPath) if modelPath else self.bundledModelPath(task)
        if not modelPath and not model.is_file():
            raise ValueError(f"no bundled model for task {task}, load a model file")
        start = time.perf_counter()
        logging.info(f"{self.MODULE_NAME}: {inputNode.GetName()} with {model.name} on {device}")
        segmentation, stats = segment_node(
            inputNode, str(model), task=task, segmentation_node=outputSegmentation, device=device,
            batch=int(batch), progress=progress, cancel=cancel, **options)
        logging.info(f"{self.MODULE_NAME}: done in {time.perf_counter() - start:.2f} s")
        return segmentation, stats

    # --- adapt to the reviewed frames (CardioSegLib.adapt) ---

    def startAdaptation(self, segmentation, volume, workFolder=None, task=None, modelPath=None,
                        epochs=ADAPT_EPOCHS):
        """Fine-tune ``modelPath`` (default: the task's bundled model) on the reviewed frames in a
        background process (CardioSegLib.adapt.AdaptationJob: poll, cancel). ``workFolder``
        default: "adapt" beside the user models folder."""
        from Training.usermodels import user_models_dir

        task = self.taskName(task or self.segmentationTask(segmentation))
        model = Path(modelPath) if modelPath else self.bundledModelPath(task)
        work = Path(workFolder) if workFolder else user_models_dir().parent / "adapt"
        logging.info(f"{self.MODULE_NAME}: adapting {model.name} to the reviewed frames of {volume.GetName()}")
        return start_adaptation(segmentation, volume, task, model, work, epochs=epochs)

    def finishAdaptation(self, job, segmentation, volume, modelsFolder=None, progress=None, cancel=None):
        """Install the adapted model and re-segment the frames not reviewed or excluded with it;
        returns (installed model path, stats)."""
        return finish_adaptation(job, segmentation, volume, models_folder=modelsFolder, progress=progress,
                                 cancel=cancel)

    # --- review (MRML only; the marks themselves: CardioSegLib.reviewstates) ---

    @classmethod
    def getSegmentEditorNode(cls):
        """The module's own Segment Editor parameter node (a scene singleton, created on demand)."""
        node = slicer.mrmlScene.GetSingletonNode(cls.MODULE_NAME, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag(cls.MODULE_NAME)
            node = slicer.mrmlScene.AddNode(node)
        return node

    @staticmethod
    def reviewSummary(segmentation, volume) -> dict:
        """Frame counts: "reviewed", "excluded", "unreviewed", "total"."""
        states = review_states(segmentation, volume)
        summary = {state: states.count(state) for state in STATES}
        summary["total"] = len(states)
        return summary

    @staticmethod
    def shownSegmentation(segmentation):
        """The node to show and edit for a result: a segmentation sequence's proxy node in its
        browser, else the result itself."""
        if segmentation is not None and segmentation.IsA("vtkMRMLSequenceNode"):
            return proxy_node(segmentation)
        return segmentation

    @staticmethod
    def sliceShowsFrames(sliceNode, volume) -> bool:
        """Whether a slice view lies in the plane of the volume's frames."""
        return shows_frames(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()), volume)

    @staticmethod
    def frameShownBySlice(sliceNode, volume):
        """Frame index a slice view shows, or None if it is not in the frames' plane."""
        try:
            sliceToRAS = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())
            if not shows_frames(sliceToRAS, volume):
                return None
            return frame_at_ras(volume, sliceToRAS[:3, 3])
        except ValueError:
            return None

    # --- export (see CardioSegLib.export and Training.trainingfolder) ---

    @classmethod
    def segmentationTask(cls, segmentation):
        """The task a segmentation was made for (its "CardioSeg.Task" attribute, set by Segment and by
        loading a case) if it is one of the module's tasks, else None."""
        task = segmentation.GetAttribute(TASK_ATTRIBUTE) if segmentation is not None else None
        return task if task in cls.TASKS else None

    def exportReviewedFrames(self, segmentation, volume, folder, progress=None, cancel=None, task=None,
                             replaceImages=False) -> list:
        """Write the reviewed frames into the training folder for ``task`` (default: the task the
        segmentation was made for, else the module's); returns the case IDs written. Raises
        ValueError (nothing to export, geometry, no task, grey/colour not the task's kind),
        TrainingFolderError (folder; CaseImageConflict unless ``replaceImages``), Cancelled."""
        task = self.taskName(task or self.segmentationTask(segmentation))
        start = time.perf_counter()
        caseIds = export_reviewed_frames(segmentation, volume, folder, task, progress=progress, cancel=cancel,
                                         replace_images=replaceImages)
        logging.info(f"{self.MODULE_NAME}: exported {len(caseIds)} frames to {folder} "
                     f"in {time.perf_counter() - start:.2f} s")
        return caseIds

    @staticmethod
    def trainingFolderCases(folder) -> list:
        """The case IDs of a training folder."""
        return [case.case_id for case in read_training_folder(folder).cases]

    def loadCase(self, folder, caseId, task=None):
        """(volume, segmentation) of a training folder case, added to the scene for review (a colour
        case as an RGB vector volume); the segments are those of ``task`` (default: the folder's
        task if the module runs it, else the module's default task, else the folder's)."""
        if task is None:
            folderTask = read_training_folder(folder, verify_pixels=False).task
            task = folderTask if folderTask in self.TASKS else self.TASK
        return load_case(folder, caseId, task)
