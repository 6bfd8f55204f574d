"""CatheterSeg: catheters and guidewires in X-ray fluoroscopy, surgical instruments in endoscopic video.

Two tasks, chosen in the module: "catheter" takes a grey volume whose slices are frames
(T, H, W), e.g. a loaded fluoroscopy run; "instruments" takes colour video, an RGB vector volume
whose slices are frames (T, H, W, 3). The output is a segmentation node with the task's segment
("Catheter" or "Instrument") in the input's geometry. A video loaded as a sequence is chosen
through the volume its browser shows (the proxy volume): then every frame is segmented, into a
segmentation sequence the browser shows with it. A grey input to the colour task, or a
colour input to the grey task, is refused with a one-line message. The widget comes from
CardioSegUI and the logic from CardioSegLib.catheterlogic (no Qt; both shared with HeartSeg
through their base classes). The heavy packages (torch, MONAI,
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
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

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

from CardioSegLib.catheterlogic import TASK, TASKS, CatheterSegmentationLogic  # noqa: E402
from CardioSegLib.export import TASK_ATTRIBUTE  # noqa: E402
from CardioSegLib.geometry import frame_count  # noqa: E402
from CardioSegLib.reviewstates import next_unreviewed, review_states, set_review_state, set_uncertainty  # noqa: E402
from CardioSegLib.sequencebrowser import (  # noqa: E402
    browser_of_proxy,
    describe_input,
    review_nodes,
    show_item,
    shown_item,
)
from CardioSegUI.dependencies import ensureDependencies as _ensureDependencies  # noqa: E402
from Training import metrics  # noqa: E402
from CardioSegUI.editorhelpers import editorSourceVolume as _editorSourceVolume  # noqa: E402
from CardioSegUI.exportpanel import EXPORT_FOLDER_SETTING  # noqa: E402
from CardioSegUI.widgetbase import SegmentationWidgetBase  # noqa: E402


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
one slice per frame), or surgical instruments in endoscopic video (a colour, RGB vector volume,
one slice per frame), or a video loaded as a sequence: choose the volume its browser shows, and
every frame of the sequence is segmented into a segmentation sequence. Choose the input and the
<b>Task</b>, optionally an existing segmentation to overwrite, a model (the task's bundled one or a retrained model file) and click
<b>Segment</b>. Then, in <b>Review and export</b>, step through the frames, correct them with
the embedded Segment Editor, <b>Mark reviewed</b> the frames that are right (or <b>Exclude</b>
them), and <b>Export reviewed frames</b> into a training folder (nnU-Net v2 layout; colour
frames as one file per channel, R, G and B) for retraining. Review marks are saved with the
scene. PyTorch and the other Python packages are installed, after asking, on first use.
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
    inputVolume - frames to segment: grey (T, H, W) for "catheter", an RGB vector volume
        (T, H, W, 3) for "instruments"; or a sequence browser's proxy volume, standing for the
        whole sequence.
    outputSegmentation - segmentation to write; None creates a new one on Segment.
    task - "catheter" (grey X-ray fluoroscopy) or "instruments" (colour endoscopic video).
    modelPath - model file; empty means the task's bundled model.
    device - "cpu" or "cuda".
    threshold - probability threshold for the task's class.
    batch - frames per forward pass.
    adaptBn - re-estimate the model's BatchNorm statistics on the input first (test-time adaptation).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    task: Annotated[str, Choice(["catheter", "instruments"])] = "catheter"
    modelPath: str = ""
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    batch: Annotated[int, WithinRange(1, 256)] = 8
    adaptBn: bool = False


#
# CatheterSegWidget
#


class CatheterSegWidget(SegmentationWidgetBase):
    """The shared widget (CardioSegUI.widgetbase) with the task choice and the threshold."""

    MODULE_NAME = "CatheterSeg"
    REQUIREMENTS_FILE = REQUIREMENTS_FILE

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._lastTask = None  # task the model list was last filled for
        self._hintKey = None  # (task, input volume ID, components) the hint label was written for

    @staticmethod
    def taskLabels() -> dict:
        return {"catheter": _("Catheter / guidewire (grey X-ray fluoroscopy)"),
                "instruments": _("Surgical instruments (colour endoscopic video)")}

    def createLogic(self):
        return CatheterSegLogic()

    def setupModule(self) -> None:
        self.ui.taskHintLabel.text = ""

    def updateChoiceLabels(self) -> None:
        super().updateChoiceLabels()
        combo, labels = self.ui.taskComboBox, self.taskLabels()
        for index, task in enumerate(TASKS):  # the Choice order
            if index < combo.count:
                combo.setItemText(index, labels[task])

    def onSceneStartClose(self, caller, event) -> None:
        self._lastTask, self._hintKey = None, None
        super().onSceneStartClose(caller, event)

    # --- the task ---

    def chosenTask(self) -> str:
        return self._parameterNode.task if self._parameterNode is not None else TASK

    def updateTaskInfo(self) -> None:
        """List the chosen task's models (dropping a selected model of the other task) and say
        when the input is of the wrong kind (grey for instruments, colour for catheter)."""
        node, task = self._parameterNode, self.chosenTask()
        if task != self._lastTask:
            previous, self._lastTask = self._lastTask, task
            self.populateModels()
            if (node is not None and node.modelPath and previous is not None
                    and self.ui.modelComboBox.findData(node.modelPath) < 0):
                node.modelPath = ""
        volume = node.inputVolume if node is not None else None
        image = volume.GetImageData() if volume is not None else None
        sequence = describe_input(volume)  # a proxy volume: the whole sequence
        key = (task, volume.GetID() if volume is not None else None,
               image.GetNumberOfScalarComponents() if image is not None else None, sequence)
        if key != self._hintKey:
            self._hintKey = key
            self.ui.taskHintLabel.text = self.logic.inputProblem(volume, task) or sequence

    def segmentationTask(self, segmentation):
        """The task a segmentation was made for (its attribute), else the chosen task."""
        return self.logic.segmentationTask(segmentation) or self.chosenTask()

    # --- hooks of the shared widget ---

    def applyToolTip(self) -> str:
        node = self._parameterNode
        if describe_input(node.inputVolume if node is not None else None):
            return _("Segment every frame of the sequence the input volume shows")
        return _("Segment {description}").format(description=self.logic.task(self.chosenTask()).description)

    def modelTasks(self) -> tuple:
        return (self.chosenTask(),)

    def modelTask(self):
        return self.chosenTask()

    def exportTask(self):
        """The task the segmentation was made for (exporting it for the other task would write
        empty labels, or grey frames where colour is expected), else the chosen task."""
        _frames, segmentation = self.reviewSubject()  # a video in a browser: its segmentation sequence
        return self.segmentationTask(segmentation)

    def prepareRun(self, node) -> bool:
        problem = self.logic.inputProblem(node.inputVolume, node.task)
        if problem:  # before any model is loaded
            self.ui.statusLabel.text = problem
            return False
        return super().prepareRun(node)  # the task's bundled model, or a model file

    def runSegmentation(self, node, progress, cancel):
        return self.logic.process(
            node.inputVolume, node.outputSegmentation, task=node.task, modelPath=node.modelPath or None,
            device=node.device, threshold=node.threshold, batch=node.batch, progress=progress, cancel=cancel,
            adaptBn=node.adaptBn)

    def onCaseLoaded(self, volume, segmentation) -> None:
        task = self.logic.segmentationTask(segmentation)
        if task and self._parameterNode is not None:
            self._parameterNode.task = task  # a colour case is reviewed as instruments

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        self.updateTaskInfo()
        super().updateGUIFromParameterNode(caller, event)


#
# CatheterSegLogic
#


class CatheterSegLogic(ScriptedLoadableModuleLogic, CatheterSegmentationLogic):
    """CardioSegLib.catheterlogic.CatheterSegmentationLogic (segmentation, review, export; no
    Qt) with the module's parameter node."""

    def getParameterNode(self):
        return CatheterSegParameterNode(super().getParameterNode())


#
# CatheterSegTest
#


class CatheterSegTest(ScriptedLoadableModuleTest):
    """Runs the bundled model on a generated held-out fluoroscopy run and checks the result; review,
    export and the review panel; the instruments task on a colour (RGB) video, as a volume and as
    a sequence chosen through its browser's proxy volume."""

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
        self.setUp()
        self.test_instruments_video()
        self.setUp()
        self.test_instruments_bundled_model()
        self.setUp()
        self.test_instruments_sequence()
        self.setUp()
        self.test_sequence_panel()
        self.setUp()
        self.test_adapt_to_reviewed_frames()

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
        dice = metrics.dice(predicted, truth)
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
        self.assertEqual(logic.checkModelFile(logic.bundledModelPath()).task, TASK)
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
        set_review_state(segmentation, 0, "reviewed", volume)
        set_review_state(segmentation, 2, "reviewed", volume)
        set_review_state(segmentation, 3, "excluded", volume)
        self.assertEqual(next_unreviewed(segmentation, volume, after=0), 1)
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
        self.assertEqual(review_states(segmentation, volume), ["unreviewed", "unreviewed", "reviewed", "unreviewed"])
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 4 frames reviewed")
        widget.ui.nextUnreviewedButton.click()
        self.assertEqual(widget.currentFrame(), 3)
        widget.ui.excludeButton.click()
        widget.ui.nextUnreviewedButton.click()
        self.assertEqual(widget.currentFrame(), 0)  # wrapped around
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 4 frames reviewed, 1 excluded")

        # with Segment's uncertainty stored, the least certain unreviewed frame comes next
        set_uncertainty(segmentation, [0.9, 0.1, 0.2, 0.3], volume)
        widget.goToFrame(3)
        widget.ui.unmarkButton.click()  # frames 0, 1 and 3 unreviewed
        widget.goToFrame(0)
        self.assertTrue(widget.ui.leastCertainFirstCheckBox.checked)
        widget.ui.nextUnreviewedButton.click()
        self.assertEqual(widget.currentFrame(), 3)  # 0.3 above 0.1; the current frame comes last
        self.assertIn("uncertainty 0.30", widget.ui.frameStateLabel.text)
        widget.ui.leastCertainFirstCheckBox.checked = False
        widget.goToFrame(0)
        widget.ui.nextUnreviewedButton.click()
        self.assertEqual(widget.currentFrame(), 1)  # in order
        widget.ui.leastCertainFirstCheckBox.checked = True
        widget.goToFrame(3)
        widget.ui.excludeButton.click()

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

    # --- the instruments task: colour video ---

    # spacing (0.3, 0.4, 1.5) mm, i and j swapped and both negated (a left-handed grid), an offset origin
    VIDEO_IJK_TO_RAS = ((0.0, -0.4, 0.0, 10.0),
                        (-0.3, 0.0, 0.0, -5.0),
                        (0.0, 0.0, 1.5, 3.0),
                        (0.0, 0.0, 0.0, 1.0))

    @staticmethod
    def colourVideo(n=4, height=48, width=64):
        """(uint8 RGB frames (T, H, W, 3), uint8 masks (T, H, W)): each channel in its own value
        range (R 0-79, G 80-159, B 160-255), so a swapped or dropped channel cannot read back
        equal; a bar (the "instrument") moves down across the frames."""
        import numpy as np

        rng = np.random.default_rng(7)
        frames = np.empty((n, height, width, 3), np.uint8)
        for c, (low, high) in enumerate(((0, 80), (80, 160), (160, 256))):
            frames[..., c] = rng.integers(low, high, (n, height, width))
        masks = np.zeros((n, height, width), np.uint8)
        for t in range(n):
            masks[t, 10 + 4 * t:16 + 4 * t, 5:50] = 1
        frames[masks > 0] = (79, 159, 255)
        return frames, masks

    @staticmethod
    def untrainedInstrumentsModel(folder):
        """A small untrained instruments model file (3 input channels, 64x64, values 0-255) in
        ``folder``: the geometry and export checks need no trained model."""
        from Training.modelfile import ModelSpec, save_model
        from Training.tasks import get_task

        spec = ModelSpec(
            task="instruments", architecture="unet-resnet18",
            architecture_args={"decoder_channels": [16, 16, 16, 16, 16]}, in_channels=3,
            classes=list(get_task("instruments").classes),
            preprocessing={"size": [64, 64], "intensity": {"method": "window", "lower": 0, "upper": 255},
                           "threshold": 0.5})
        return Path(save_model(Path(folder) / "CatheterSegTest-instruments.safetensors", spec.build(), spec))

    def test_instruments_bundled_model(self):
        """The bundled instruments model finds the instruments of a generated colour video
        (frames it was never trained on) loaded as an RGB vector volume: Dice >= 0.85."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation
        from Training import endoscopy

        logic = CatheterSegLogic()
        frames, truth = endoscopy.generate_video(endoscopy.HELD_OUT_SEED_BASE + 3, n_frames=6, size=(256, 256))
        volume = slicer.util.addVolumeFromArray(frames.round().astype(np.uint8), np.array(self.VIDEO_IJK_TO_RAS),
                                                name="CatheterSegTestEndoscopy", nodeClassName="vtkMRMLVectorVolumeNode")
        self.delayDisplay("Segmenting 6 generated endoscopy frames with the bundled model")
        segmentation, stats = logic.process(volume, None, task="instruments")
        predicted = labels_from_segmentation(segmentation, volume, logic.task("instruments").classes) > 0
        dice = metrics.dice(predicted, truth)
        self.delayDisplay(f"Instrument Dice {dice:.3f}")
        self.assertGreaterEqual(dice, 0.85)

    def test_instruments_video(self):
        """An RGB vector volume through the instruments task: Segment lands in its geometry, grey
        input (and colour input to the catheter task) is refused, reviewed colour frames are
        exported with R, G, B and read back equal, and a case loads back as a colour volume."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation, write_segmentation
        from Training.errors import InputError
        from Training.trainingfolder import read_training_folder

        logic = CatheterSegLogic()
        frames, truth = self.colourVideo()
        ijkToRAS = np.array(self.VIDEO_IJK_TO_RAS)
        volume = slicer.util.addVolumeFromArray(frames, ijkToRAS, name="CatheterSegTestVideo",
                                                nodeClassName="vtkMRMLVectorVolumeNode")
        self.assertEqual(logic.inputProblem(volume, "instruments"), "")
        self.assertIn("colour", logic.inputProblem(volume, "catheter"))
        modelPath = self.instrumentsModelPath(logic)

        self.delayDisplay(f"Segmenting 4 colour frames with {modelPath.name}")
        segmentation, stats = logic.process(volume, None, task="instruments", modelPath=str(modelPath))
        self.assertEqual((stats["frames"], stats["task"]), (4, "instruments"))
        self.assertEqual(segmentation.GetAttribute(TASK_ATTRIBUTE), "instruments")
        segments = segmentation.GetSegmentation()
        names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
        self.assertEqual(names, ["Instrument"])
        # the video's grid is the segmentation's reference geometry
        geometry = segments.GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        numbers = [float(x) for x in geometry.strip(";").split(";")]
        self.assertTrue(np.allclose(np.reshape(numbers[:16], (4, 4)), ijkToRAS), geometry)
        self.assertEqual(numbers[16:], [0, 63, 0, 47, 0, 3])
        classes = logic.task("instruments").classes
        self.assertEqual(labels_from_segmentation(segmentation, volume, classes).shape, (4, 48, 64))

        # grey frames are refused by this task, colour frames by the catheter task, with the reason
        grey = slicer.util.addVolumeFromArray(np.ascontiguousarray(frames[..., 1]), ijkToRAS,
                                              name="CatheterSegTestGrey")
        with self.assertRaisesRegex(InputError, "grey"):
            logic.process(grey, None, task="instruments", modelPath=str(modelPath))
        with self.assertRaisesRegex(InputError, "colour"):
            logic.process(volume, None, task="catheter")

        self.delayDisplay("Exporting two reviewed colour frames")
        write_segmentation(truth, volume, classes, segmentation)  # the corrected labels
        set_review_state(segmentation, 1, "reviewed", volume)
        set_review_state(segmentation, 3, "reviewed", volume)
        folder = Path(slicer.app.temporaryPath) / "CatheterSegTest-instruments"
        shutil.rmtree(folder, ignore_errors=True)
        caseIds = logic.exportReviewedFrames(segmentation, volume, folder)  # the segmentation's task
        self.assertEqual(len(caseIds), 2)
        trainingFolder = read_training_folder(folder)
        self.assertEqual(trainingFolder.task, "instruments")
        self.assertEqual(trainingFolder.dataset["channel_names"], {"0": "R", "1": "G", "2": "B"})
        cases = {case.frame_index: case for case in trainingFolder.cases}
        self.assertEqual(sorted(cases), [1, 3])
        rasToLps = np.diag([-1.0, -1.0, 1.0])
        for k in (1, 3):
            image, label, geometry = trainingFolder.load(cases[k].case_id)
            self.assertEqual((image.shape, image.dtype), ((48, 64, 3), np.dtype(np.uint8)))
            self.assertTrue(np.array_equal(image, frames[k]), f"frame {k}: colour image differs from the volume")
            self.assertTrue(np.array_equal(label, truth[k]), f"frame {k}: label differs from the segment")
            self.assertTrue(np.allclose(geometry["origin"], rasToLps @ (ijkToRAS @ [0, 0, k, 1])[:3]), geometry)

        loadedVolume, loadedSegmentation = logic.loadCase(folder, cases[3].case_id)
        self.assertTrue(loadedVolume.IsA("vtkMRMLVectorVolumeNode"))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(loadedVolume)[0], frames[3]))
        self.assertEqual(loadedSegmentation.GetAttribute(TASK_ATTRIBUTE), "instruments")
        self.assertTrue(np.array_equal(
            labels_from_segmentation(loadedSegmentation, loadedVolume, classes)[0], truth[3]))
        shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")

    # --- a colour video loaded as a sequence, chosen through its browser's proxy volume ---

    def colourSequence(self, name="CatheterSegTestSequence"):
        """(frames, masks, sequence, browser, proxy): colourVideo's frames as a sequence of
        single-slice RGB volumes (item t in the video's frame t, index values 0.00, 0.04, ... s),
        a new browser of it, and the proxy volume the browser shows the current item in."""
        frames, masks = self.colourVideo()
        sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
        sequence.SetIndexName("time")
        sequence.SetIndexUnit("s")
        for t, frame in enumerate(frames):
            item = slicer.vtkMRMLVectorVolumeNode()
            item.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(self.videoFrameMatrix(t)))
            slicer.util.updateVolumeFromArray(item, frame[None])
            sequence.SetDataNodeAtValue(item, f"{0.04 * t:.2f}")
        browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
        browser.AddSynchronizedSequenceNode(sequence)  # the first sequence is the primary one
        return frames, masks, sequence, browser, browser.GetProxyNode(sequence)

    def videoFrameMatrix(self, t):
        """IJK to RAS of frame t of VIDEO_IJK_TO_RAS's grid, as a single-slice volume."""
        import numpy as np

        matrix = np.array(self.VIDEO_IJK_TO_RAS)
        matrix[:3, 3] = (matrix @ [0, 0, t, 1])[:3]
        return matrix

    def instrumentsModelPath(self, logic):
        """The bundled instruments model, or, before it is trained, an untrained one (it checks the plumbing)."""
        modelPath = logic.bundledModelPath("instruments")
        return modelPath if modelPath.is_file() else self.untrainedInstrumentsModel(slicer.app.temporaryPath)

    def test_instruments_sequence(self):
        """A colour video as a sequence, given as its browser's proxy volume: every frame is
        segmented, into a segmentation sequence synchronized to the browser with one item per
        frame in that frame's grid; an edit of the proxy segmentation on screen is kept in its
        item and exported; Segment again overwrites the same sequence; a volume run never
        writes into the proxy segmentation."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation, write_segmentation
        from Training.trainingfolder import read_training_folder

        logic = CatheterSegLogic()
        frames, truth, sequence, browser, proxy = self.colourSequence()
        self.assertTrue(proxy is not None and proxy.IsA("vtkMRMLVectorVolumeNode"))
        self.assertEqual(browser_of_proxy(proxy).GetID(), browser.GetID())
        self.assertIn("sequence 'CatheterSegTestSequence' (4 frames): every frame is segmented",
                      describe_input(proxy))
        self.assertEqual(logic.inputProblem(proxy, "instruments"), "")
        self.assertIn("colour", logic.inputProblem(proxy, "catheter"))
        modelPath = self.instrumentsModelPath(logic)

        self.delayDisplay(f"Segmenting the 4 frames of a sequence with {modelPath.name}")
        calls = []
        segmentation, stats = logic.process(proxy, None, task="instruments", modelPath=str(modelPath),
                                            progress=lambda done, total, *a: calls.append((done, total)))
        self.assertTrue(segmentation.IsA("vtkMRMLSequenceNode"))
        self.assertEqual((segmentation.GetNumberOfDataNodes(), stats["frames"]), (4, 4))
        self.assertEqual(calls[-1], (4, 4))
        self.assertTrue(browser.IsSynchronizedSequenceNode(segmentation))
        classes = logic.task("instruments").classes
        for t in range(4):
            item = segmentation.GetNthDataNode(t)
            self.assertEqual(segmentation.GetNthIndexValue(t), sequence.GetNthIndexValue(t))
            geometry = item.GetSegmentation().GetConversionParameter(
                slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
            numbers = [float(x) for x in geometry.strip(";").split(";")]
            self.assertTrue(np.allclose(np.reshape(numbers[:16], (4, 4)), self.videoFrameMatrix(t)), geometry)
            self.assertEqual(numbers[16:], [0, 63, 0, 47, 0, 0])

        shown = logic.shownSegmentation(segmentation)  # what the views show, and the panel selects
        self.assertTrue(shown.IsA("vtkMRMLSegmentationNode"))
        items, states = review_nodes(proxy, shown)
        self.assertEqual((items.GetID(), states.GetID()), (sequence.GetID(), segmentation.GetID()))
        self.assertEqual(frame_count(items), 4)

        self.delayDisplay("Correcting frame 2 on screen, marking it reviewed and exporting it")
        self.assertTrue(show_item(proxy, 2))
        self.assertEqual(shown_item(proxy), 2)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(proxy)[0], frames[2]))
        write_segmentation(truth[2:3], proxy, classes, shown)  # as Segment Editor would, on the proxy
        set_review_state(states, 2, "reviewed", items)
        folder = Path(slicer.app.temporaryPath) / "CatheterSegTest-sequence"
        shutil.rmtree(folder, ignore_errors=True)
        caseIds = logic.exportReviewedFrames(states, items, folder)
        self.assertEqual(len(caseIds), 1)
        trainingFolder = read_training_folder(folder)
        (case,) = trainingFolder.cases
        self.assertEqual((case.frame_index, case.source), (2, "CatheterSegTestSequence"))
        image, label, _geometry = trainingFolder.load(case.case_id)
        self.assertTrue(np.array_equal(image, frames[2]), "the exported image is not frame 2")
        self.assertTrue(np.array_equal(label, truth[2]), "the edit on screen did not reach the export")
        shutil.rmtree(folder, ignore_errors=True)

        # Segment again, with the proxy segmentation selected: the same sequence, marks cleared
        sequences = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")
        again, _stats = logic.process(proxy, shown, task="instruments", modelPath=str(modelPath))
        self.assertEqual(again.GetID(), segmentation.GetID())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSequenceNode"), sequences)
        self.assertEqual(logic.reviewSummary(states, items)["reviewed"], 0)
        self.assertEqual(labels_from_segmentation(again.GetNthDataNode(0), sequence.GetNthDataNode(0),
                                                  classes).shape, (1, 48, 64))

        # a volume run with the proxy segmentation selected makes a new segmentation
        volume = slicer.util.addVolumeFromArray(frames, np.array(self.VIDEO_IJK_TO_RAS), name="CatheterSegTestVideo",
                                                nodeClassName="vtkMRMLVectorVolumeNode")
        single, _stats = logic.process(volume, shown, task="instruments", modelPath=str(modelPath))
        self.assertTrue(single.IsA("vtkMRMLSegmentationNode"))
        self.assertNotEqual(single.GetID(), shown.GetID())
        self.delayDisplay("Test passed")

    def test_adapt_to_reviewed_frames(self):
        """Frames of a kind the bundled model gets wrong (unlabelled look-alikes: leads, wires, clips),
        8 of them corrected and reviewed: adapting raises the Dice on the 8 others."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import time

        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation, write_segmentation
        from Training.seeds import HELD_OUT_SEED_BASE
        from Training.stress_catheter import stress_run

        frames, masks = stress_run(HELD_OUT_SEED_BASE + 90_000_000, 16, (256, 256), "confusers")
        volume = slicer.util.addVolumeFromArray(frames, name="CatheterSegAdaptRun")
        logic = CatheterSegLogic()
        segmentation, _stats = logic.process(volume, None)
        classes = CatheterSegLogic.task().classes

        def dice(labels, ks):
            a, b = labels[ks] > 0, masks[ks] > 0
            return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)

        before = labels_from_segmentation(segmentation, volume, classes)
        corrected = before.copy()
        corrected[:8] = masks[:8]  # the user's corrections
        write_segmentation(corrected, volume, classes, segmentation)
        for k in range(8):
            set_review_state(segmentation, k, "reviewed", volume)
        folder = Path(slicer.app.temporaryPath) / "CatheterSegTest-adapt"
        job = logic.startAdaptation(segmentation, volume, workFolder=folder / "work")
        while not job.poll()[2]:
            slicer.app.processEvents()  # Slicer stays responsive: the fine-tune runs in another process
            time.sleep(0.5)
        self.assertTrue(job.succeeded, job.error)
        installed, stats = logic.finishAdaptation(job, segmentation, volume, modelsFolder=folder / "models")
        self.assertEqual(stats["frames"], 8)
        after = labels_from_segmentation(segmentation, volume, classes)
        self.assertTrue(np.array_equal(after[:8], masks[:8]), "reviewed frames changed")
        rest = list(range(8, 16))
        self.assertGreater(dice(after, rest), dice(before, rest) + 0.02,
                           f"Dice on the other frames {dice(before, rest):.3f} -> {dice(after, rest):.3f}")
        shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")

    def test_sequence_panel(self):
        """The panel with a sequence's proxy volume as input: it says every frame is segmented;
        Segment makes a segmentation sequence and selects its proxy; the frame slider runs over
        the items and moves the browser, the browser moves the slider; marks land on the
        segmentation sequence."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        slicer.util.selectModule("CatheterSeg")
        widget = slicer.util.getModuleWidget("CatheterSeg")
        logic = CatheterSegLogic()
        _frames, _truth, sequence, browser, proxy = self.colourSequence("CatheterSegPanelSequence")
        modelPath = self.instrumentsModelPath(logic)
        parameterNode = widget._parameterNode
        parameterNode.task = "instruments"
        parameterNode.modelPath = "" if modelPath == logic.bundledModelPath("instruments") else str(modelPath)
        parameterNode.outputSegmentation = None
        parameterNode.inputVolume = proxy
        slicer.app.processEvents()
        self.assertIn("(4 frames): every frame is segmented", widget.ui.taskHintLabel.text)

        widget.ui.applyButton.click()
        slicer.app.processEvents()
        shown = parameterNode.outputSegmentation
        self.assertIsNotNone(shown, widget.ui.statusLabel.text)
        segmentations = browser.GetSequenceNode(shown)
        self.assertIsNotNone(segmentations, "the selected segmentation is not the proxy of a sequence")
        self.assertEqual(segmentations.GetNumberOfDataNodes(), 4)
        self.assertEqual(int(widget.ui.frameSliderWidget.maximum), 3)
        self.assertEqual(widget.ui.reviewCountLabel.text, "0 of 4 frames reviewed")

        widget.ui.frameSliderWidget.value = 2
        slicer.app.processEvents()
        self.assertEqual(shown_item(proxy), 2)
        widget.ui.markReviewedButton.click()
        self.assertEqual(review_states(segmentations, sequence),
                         ["unreviewed", "unreviewed", "reviewed", "unreviewed"])
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 4 frames reviewed")
        browser.SetSelectedItemNumber(1)  # the sequence toolbar
        slicer.app.processEvents()
        self.assertEqual(widget.currentFrame(), 1)
        self.assertEqual(widget.ui.frameStateLabel.text, "not reviewed")
        self.delayDisplay("Test passed")
