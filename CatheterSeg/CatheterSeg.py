"""CatheterSeg: segment catheters and guidewires in X-ray fluoroscopy runs.

The input is a grey volume whose slices are frames (T, H, W), e.g. a loaded run. The output is a
segmentation node with one "Catheter" segment in the input's geometry. The widget and logic
come from CardioSegUI (shared with HeartSeg). The heavy packages (torch, MONAI,
segmentation-models-pytorch) are never imported when Slicer loads this module: they are
checked, and installed after asking, on the first click of Segment.
"""
import shutil
import sys
from pathlib import Path
from typing import Annotated

import qt

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

TASK = "catheter"
MODULE_DIR = Path(__file__).resolve().parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"


def _addSharedPackagesToPath() -> None:
    """Make CardioSegUI, CardioSegLib and Training importable.

    Source tree: they sit next to the module folder (repo root). Build tree and installed
    extension: CMake copies them next to this file (the qt-scripted-modules folder).
    """
    for folder in (MODULE_DIR, MODULE_DIR.parent):
        if all((folder / package).is_dir() for package in ("CardioSegUI", "CardioSegLib", "Training")):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return


_addSharedPackagesToPath()

from CardioSegUI.dependencies import ensureDependencies as _ensureDependencies  # noqa: E402
from CardioSegUI.moduleparts import (  # noqa: E402
    EXPORT_FOLDER_SETTING,
    SegmentationLogicBase,
    SegmentationWidgetBase,
    editorSourceVolume as _editorSourceVolume,
)


#
# CatheterSeg
#


class CatheterSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Catheter Seg")
        self.parent.categories = ["CardioSeg"]
        self.parent.dependencies = []
        self.parent.contributors = ["CardioSeg developers"]
        self.parent.helpText = _("""
Segments catheters and guidewires in X-ray fluoroscopy runs (grey frames stacked as a volume,
one slice per frame). Choose the input, optionally an existing
segmentation to overwrite, a model (the bundled one or a retrained model file) and click
<b>Segment</b>. Then, in <b>Review and export</b>, step through the frames, correct them with
the embedded Segment Editor, <b>Mark reviewed</b> the frames that are right (or <b>Exclude</b>
them), and <b>Export reviewed frames</b> into a training folder (nnU-Net v2 layout) for
retraining. Review marks are saved with the scene. PyTorch and the other Python packages are
installed, after asking, on first use.
""")
        self.parent.acknowledgementText = _("""
Part of the CardioSeg extension. Built on 3D Slicer's scripted module template, PyTorch,
MONAI and segmentation-models-pytorch.
""")


def ensureDependencies(askConfirmation: bool = True) -> bool:
    """Make torch and the packages of Resources/requirements.txt importable.

    Asks before installing anything (unless askConfirmation is False, as in the self-test).
    Returns False if the user declined. Never called at import time.
    """
    return _ensureDependencies(REQUIREMENTS_FILE, "CatheterSeg", askConfirmation)


#
# CatheterSegParameterNode
#


@parameterNodeWrapper
class CatheterSegParameterNode:
    """
    inputVolume - grey frames (T, H, W) to segment.
    outputSegmentation - segmentation to write; None creates a new one on Segment.
    modelPath - model file; empty means the bundled model.
    device - "cpu" or "cuda".
    threshold - probability threshold for the catheter class.
    batch - frames per forward pass.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    batch: Annotated[int, WithinRange(1, 256)] = 8


#
# CatheterSegWidget
#


class CatheterSegWidget(SegmentationWidgetBase):
    """The shared widget (CardioSegUI.moduleparts) with the catheter threshold."""

    MODULE_NAME = "CatheterSeg"
    REQUIREMENTS_FILE = REQUIREMENTS_FILE

    def createLogic(self):
        return CatheterSegLogic()

    def applyToolTip(self) -> str:
        return _("Segment catheters in every frame of the input volume")

    def runSegmentation(self, node, progress, cancel):
        return self.logic.process(
            node.inputVolume, node.outputSegmentation, modelPath=node.modelPath or None,
            device=node.device, threshold=node.threshold, batch=node.batch, progress=progress, cancel=cancel)


#
# CatheterSegLogic
#


class CatheterSegLogic(SegmentationLogicBase):
    """Model selection, segmentation, review and export for the catheter task; usable without the
    GUI, e.g. from the Python console (see SegmentationLogicBase for the shared methods)."""

    MODULE_NAME = "CatheterSeg"
    TASKS = ("catheter",)
    TASK = TASK
    PARAMETER_NODE_CLASS = CatheterSegParameterNode

    def process(self, inputNode, outputSegmentation=None, modelPath=None, device="cpu", threshold=0.5,
                batch=8, progress=None, cancel=None):
        """Segment every frame of inputNode into outputSegmentation (created if None).

        progress(done, total) is called after each batch; cancel() returning True stops the run.
        Returns (segmentationNode, stats) with stats "frames", "seconds", "frames_per_second".
        """
        return self.runModel(inputNode, outputSegmentation, modelPath=modelPath, device=device, batch=batch,
                             progress=progress, cancel=cancel, threshold=float(threshold))


#
# CatheterSegTest
#


class CatheterSegTest(ScriptedLoadableModuleTest):
    """Runs the bundled model on a generated held-out fluoroscopy run and checks the result."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_generated_run()
        self.setUp()
        self.test_refuses_foreign_model_file()
        self.setUp()
        self.test_review_and_export()
        self.setUp()
        self.test_review_panel()

    def test_segment_generated_run(self):
        self.delayDisplay("Checking Python packages")
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation
        from Training import fluoro

        frames, masks = fluoro.generate_run(seed=fluoro.HELD_OUT_SEED_BASE + 7, n_frames=6, size=(256, 256))
        volume = slicer.util.addVolumeFromArray(frames, name="CatheterSegTestRun")
        logic = CatheterSegLogic()
        self.assertTrue(logic.bundledModelPath().is_file(), f"no bundled model at {logic.bundledModelPath()}")

        self.delayDisplay("Segmenting 6 frames with the bundled model")
        calls = []
        segmentation, stats = logic.process(volume, None, progress=lambda done, total, *a: calls.append((done, total)))
        self.assertIsNotNone(segmentation)
        self.assertEqual(stats["frames"], 6)
        self.assertGreater(stats["frames_per_second"], 0)
        self.assertTrue(calls and calls[-1] == (6, 6), f"progress calls: {calls}")

        segments = segmentation.GetSegmentation()
        self.assertEqual(segments.GetNumberOfSegments(), 1)
        self.assertEqual(segments.GetNthSegment(0).GetName(), "Catheter")

        labels = labels_from_segmentation(segmentation, volume, logic.task().classes)
        self.assertEqual(labels.shape, masks.shape)
        predicted, truth = labels == 1, masks > 0
        dice = 2.0 * np.logical_and(predicted, truth).sum() / max(predicted.sum() + truth.sum(), 1)
        self.delayDisplay(f"Dice {dice:.3f}")
        self.assertGreaterEqual(dice, 0.8)

        # A second run writes into the same node instead of adding one.
        count = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        again, _stats = logic.process(volume, segmentation, threshold=0.5)
        self.assertEqual(again.GetID(), segmentation.GetID())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), count)
        self.assertEqual(again.GetSegmentation().GetNumberOfSegments(), 1)
        self.delayDisplay("Test passed")

    def test_refuses_foreign_model_file(self):
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        logic = CatheterSegLogic()
        bad = Path(slicer.app.temporaryPath) / "CatheterSegTest-not-a-model.safetensors"
        bad.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
        with self.assertRaises(ValueError):  # ModelFileError is a ValueError
            logic.checkModelFile(bad)
        self.assertTrue(logic.checkModelFile(logic.bundledModelPath()).task == TASK)
        self.delayDisplay("Test passed")

    def _editedRun(self, name):
        """A generated run with its true masks as segmentation and frame 2 redrawn by hand."""
        import numpy as np

        from CardioSegLib.scene import write_segmentation
        from Training import fluoro

        frames, masks = fluoro.generate_run(seed=fluoro.HELD_OUT_SEED_BASE + 8, n_frames=4, size=(64, 64))
        volume = slicer.util.addVolumeFromArray(frames, name=name)
        classes = CatheterSegLogic.task().classes
        segmentation = write_segmentation((masks > 0).astype(np.uint8), volume, classes)
        segmentation.SetAttribute("CardioSeg.ModelVersion", "selftest")
        segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName(classes[0]["name"])
        redrawn = (masks > 0).astype(np.uint8)
        redrawn[2] = 0
        redrawn[2, 10:14, 5:60] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(redrawn, segmentation, segmentId, volume)
        return frames, volume, segmentation, redrawn

    def test_review_and_export(self):
        """Two frames (one edited) marked reviewed, exported, read back equal to the segments."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation
        from Training.trainingfolder import read_training_folder

        logic = CatheterSegLogic()
        frames, volume, segmentation, redrawn = self._editedRun("CatheterSegReviewRun")
        classes = logic.task().classes
        segments = labels_from_segmentation(segmentation, volume, classes)
        self.assertTrue(np.array_equal(segments, redrawn), "the edit did not reach the segment")
        summary = logic.reviewSummary(segmentation, volume)
        self.assertEqual((summary["reviewed"], summary["total"]), (0, 4))  # editing marks nothing

        self.delayDisplay("Marking frames 0 and 2 reviewed and exporting them")
        logic.setReviewState(segmentation, volume, 0, "reviewed")
        logic.setReviewState(segmentation, volume, 2, "reviewed")
        logic.setReviewState(segmentation, volume, 3, "excluded")
        self.assertEqual(logic.nextUnreviewed(segmentation, volume, after=0), 1)
        folder = Path(slicer.app.temporaryPath) / "CatheterSegTest-export"
        shutil.rmtree(folder, ignore_errors=True)
        calls = []
        caseIds = logic.exportReviewedFrames(segmentation, volume, folder,
                                             progress=lambda done, total, *a: calls.append((done, total)))
        self.assertEqual(len(caseIds), 2)
        self.assertTrue(calls and calls[-1][0] == calls[-1][1] == 2, f"progress calls: {calls}")

        trainingFolder = read_training_folder(folder)
        cases = {case.frame_index: case for case in trainingFolder.cases}
        self.assertEqual(sorted(cases), [0, 2])
        for k in (0, 2):
            case = cases[k]
            self.assertEqual(case.source, "CatheterSegReviewRun")
            self.assertEqual(case.model_version, "selftest")
            image, label, geometry = trainingFolder.load(case.case_id)
            self.assertTrue(np.array_equal(label, segments[k]), f"frame {k}: label differs from the segment")
            self.assertTrue(np.array_equal(image, frames[k]), f"frame {k}: image differs from the volume")
            self.assertEqual(image.dtype, frames.dtype)
            # addVolumeFromArray's default geometry is IJK = RAS: in LPS x and y are negated
            self.assertTrue(np.allclose(geometry["origin"], (0.0, 0.0, float(k))), geometry)
            self.assertTrue(np.allclose(geometry["direction"], (-1, 0, 0, 0, -1, 0, 0, 0, 1)), geometry)

        # exporting again replaces the two cases instead of adding any
        self.assertEqual(sorted(logic.exportReviewedFrames(segmentation, volume, folder)), sorted(caseIds))
        self.assertEqual(len(read_training_folder(folder).cases), 2)

        # a case comes back into the scene for review
        loadedVolume, loadedSegmentation = logic.loadCase(folder, cases[2].case_id)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(loadedVolume)[0], frames[2]))
        self.assertTrue(np.array_equal(
            labels_from_segmentation(loadedSegmentation, loadedVolume, classes)[0], segments[2]))
        shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")

    def test_review_panel(self):
        """The panel's frame slider, mark buttons, count, Segment Editor and remembered folder."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        slicer.util.selectModule("CatheterSeg")
        widget = slicer.util.getModuleWidget("CatheterSeg")
        frames, volume, segmentation, redrawn = self._editedRun("CatheterSegPanelRun")
        parameterNode = widget._parameterNode
        parameterNode.inputVolume = volume
        parameterNode.outputSegmentation = segmentation
        slicer.app.processEvents()
        self.assertEqual(widget.segmentEditorWidget.segmentationNode(), segmentation)
        self.assertEqual(_editorSourceVolume(widget.segmentEditorWidget), volume)
        self.assertEqual(int(widget.ui.frameSliderWidget.maximum), 3)
        self.assertEqual(widget.ui.reviewCountLabel.text, "0 of 4 frames reviewed")

        widget.ui.frameSliderWidget.value = 2
        slicer.app.processEvents()
        redSliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        self.assertEqual(CatheterSegLogic.frameShownBySlice(redSliceNode, volume), 2)
        widget.ui.markReviewedButton.click()
        self.assertEqual(CatheterSegLogic.reviewStates(segmentation, volume), ["unreviewed", "unreviewed", "reviewed", "unreviewed"])
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 4 frames reviewed")
        widget.ui.nextUnreviewedButton.click()
        self.assertEqual(widget.currentFrame(), 3)
        widget.ui.excludeButton.click()
        widget.ui.nextUnreviewedButton.click()
        self.assertEqual(widget.currentFrame(), 0)  # wrapped around
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 4 frames reviewed, 1 excluded")

        settings = qt.QSettings()
        previous = settings.value(EXPORT_FOLDER_SETTING)
        try:
            folder = str(Path(slicer.app.temporaryPath) / "CatheterSegTest-panel")
            widget.ui.exportFolderPathLineEdit.currentPath = folder
            self.assertEqual(settings.value(EXPORT_FOLDER_SETTING), folder)
            self.assertTrue(widget.ui.exportButton.enabled)
        finally:
            widget.ui.exportFolderPathLineEdit.currentPath = previous or ""
            if previous is None:
                settings.remove(EXPORT_FOLDER_SETTING)
            else:
                settings.setValue(EXPORT_FOLDER_SETTING, previous)
        self.delayDisplay("Test passed")
