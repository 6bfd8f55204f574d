"""HeartSeg: the whole heart in chest CT, and LV, myocardium and left atrium in apical echo.

The input is a CT volume (Hounsfield units, segmented axial slice by slice) or an echo clip
stored as a volume whose slices are frames. The task is chosen, or detected from the volume
(DICOM modality, value range). After a CT run the module shows the heart volume in mL; after an
echo run the LV area per frame as a curve, with the end-diastolic (ED) and end-systolic (ES)
frames found from it. The widget comes from CardioSegUI and the logic from
CardioSegLib.heartlogic (no Qt; both shared with CatheterSeg through their base classes). The
heavy packages are never imported when Slicer loads this module: they are checked, and
installed after asking, on the first click of Segment.
"""
import logging
import shutil
import sys
from pathlib import Path
from typing import Annotated

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
# Not "requirements.txt": every module's Resources/ is copied into the same qt-scripted-modules/Resources.
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "HeartSeg-requirements.txt"


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

from CardioSegLib.export import TASK_ATTRIBUTE  # noqa: E402
from CardioSegLib.heartlogic import AUTO, TASKS, HeartSegmentationLogic  # noqa: E402
from CardioSegLib.measurements import show_area_curve  # noqa: E402
from CardioSegLib.reviewstates import review_states, set_review_state  # noqa: E402
from CardioSegLib.segment import detect_task  # noqa: E402
from CardioSegUI.dependencies import ensureDependencies as _ensureDependencies  # noqa: E402
from Training import metrics  # noqa: E402
from CardioSegUI.editorhelpers import editorSourceVolume  # noqa: E402
from CardioSegUI.widgetbase import SegmentationWidgetBase  # noqa: E402


#
# HeartSeg
#


class HeartSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Heart Seg")
        self.parent.categories = ["CardioSeg"]
        self.parent.dependencies = []
        self.parent.contributors = ["CardioSeg developers"]
        self.parent.helpText = _("""
Segments the whole heart in chest CT, or the LV cavity, the LV myocardium and the left atrium in
apical 2- and 4-chamber echo clips (frames stacked as a volume, one slice per frame). Choose the
input and the task (<b>Automatic</b> tells CT from echo by the DICOM modality and the values),
optionally an existing segmentation to overwrite and a model, and click <b>Segment</b>.
<b>Measurements</b> shows the heart volume in mL (CT), or the LV area curve with the
end-diastolic and end-systolic frames (echo). In <b>Review and export</b>, correct slices or
frames with the embedded Segment Editor, mark the right ones reviewed and export them into a
training folder (nnU-Net v2 layout) for retraining. PyTorch and the other Python packages are
installed, after asking, on first use.
""")
        self.parent.acknowledgementText = _("""
Part of the CardioSeg extension. Built on 3D Slicer's scripted module template, PyTorch,
MONAI and segmentation-models-pytorch.
""")


def ensureDependencies(askConfirmation: bool = True) -> bool:
    """Make torch and the packages of Resources/HeartSeg-requirements.txt importable.

    Asks before installing anything (unless askConfirmation is False, as in the self-test).
    Returns False if the user declined. Never called at import time.
    """
    return _ensureDependencies(REQUIREMENTS_FILE, "HeartSeg", askConfirmation)


def dicomModality(volume):
    """DICOM Modality (0008,0060) of a volume loaded from the DICOM database, else None."""
    try:
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split() if volume is not None else []
        database = getattr(slicer, "dicomDatabase", None)
        if not uids or database is None:
            return None
        path = database.fileForInstance(uids[0])
        value = database.fileValue(path, "0008,0060") if path else ""
        return (value or "").strip() or None
    except Exception:  # no open database, a file that is gone...: decide from the values
        return None


#
# HeartSegParameterNode
#


@parameterNodeWrapper
class HeartSegParameterNode:
    """
    inputVolume - CT volume or echo frames (T, H, W) to segment.
    outputSegmentation - segmentation to write; None creates a new one on Segment.
    task - "auto" (detect from the volume), "heart-ct" or "echo".
    modelPath - model file; empty means the task's bundled model.
    device - "cpu" or "cuda".
    batch - slices or frames per forward pass.
    adaptBn - re-estimate the model's BatchNorm statistics on the input first (test-time adaptation).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    task: Annotated[str, Choice(["auto", "heart-ct", "echo"])] = "auto"
    modelPath: str = ""
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    batch: Annotated[int, WithinRange(1, 256)] = 8
    adaptBn: bool = False


#
# HeartSegWidget
#


class HeartSegWidget(SegmentationWidgetBase):
    """The shared widget (CardioSegUI.widgetbase) with the task choice and the measurements."""

    MODULE_NAME = "HeartSeg"
    REQUIREMENTS_FILE = REQUIREMENTS_FILE

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._taskKey = None  # (chosen task, input volume ID, has image data) that _detected is for
        self._detected = (None, "")  # AUTO: (detected task or None, reason or why not)
        self._lastTask = None  # task in effect when the model list was last filled
        self._runTask = None  # task of the run in progress
        self._measurement = None  # logic.measure() result with the volume and segmentation IDs

    @staticmethod
    def taskLabels() -> dict:
        return {AUTO: _("Automatic (from the volume)"), "heart-ct": _("Heart in CT"),
                "echo": _("Echo: LV, myocardium, left atrium")}

    def createLogic(self):
        return HeartSegLogic()

    def setupModule(self) -> None:
        self.ui.goToEdButton.connect("clicked(bool)", lambda checked=False: self.goToCardiacPhase("ed_frame"))
        self.ui.goToEsButton.connect("clicked(bool)", lambda checked=False: self.goToCardiacPhase("es_frame"))
        self.ui.measureButton.connect("clicked(bool)", lambda checked=False: self.updateMeasurements())
        self.ui.detectedTaskLabel.text = ""
        self.ui.measurementLabel.text = ""

    def updateChoiceLabels(self) -> None:
        super().updateChoiceLabels()
        combo, labels = self.ui.taskComboBox, self.taskLabels()
        for index, task in enumerate((AUTO, *TASKS)):  # the Choice order
            if index < combo.count:
                combo.setItemText(index, labels[task])

    def onSceneStartClose(self, caller, event) -> None:
        self._taskKey, self._detected, self._lastTask, self._measurement = None, (None, ""), None, None
        super().onSceneStartClose(caller, event)

    # --- the task ---

    def chosenTask(self) -> str:
        return self._parameterNode.task if self._parameterNode is not None else AUTO

    def effectiveTask(self):
        """The chosen task, or the detected one for AUTO; None when not known (yet)."""
        chosen = self.chosenTask()
        return chosen if chosen != AUTO else self._detected[0]

    def detectTask(self, volume) -> tuple:
        """(task or None, reason or why it cannot be told), for the GUI; never raises."""
        if volume is None:
            return None, _("Select an input volume.")
        try:
            return detect_task(volume, modality=dicomModality(volume))
        except ValueError as e:  # InputError: neither CT nor echo
            return None, str(e)
        except Exception as e:
            logging.exception("HeartSeg: task detection failed")
            return None, str(e)

    def setDetected(self, task, reason) -> None:
        self._detected = (task, reason)
        self.ui.detectedTaskLabel.text = (
            _("Detected: {task} ({reason})").format(task=self.taskLabels()[task], reason=reason) if task
            else reason)
        self.onEffectiveTaskChanged()

    def onEffectiveTaskChanged(self) -> None:
        """List the models of the task now in effect; drop a selected model of another task."""
        current = self.effectiveTask()
        previous, self._lastTask = self._lastTask, current
        self.populateModels()
        node = self._parameterNode
        if (node is not None and node.modelPath and current and previous != current
                and self.ui.modelComboBox.findData(node.modelPath) < 0):
            node.modelPath = ""

    def updateTaskInfo(self) -> None:
        """Detect the task when the chosen task or the input volume changed."""
        node = self._parameterNode
        volume = node.inputVolume if node is not None else None
        key = (self.chosenTask(), volume.GetID() if volume is not None else None,
               volume is not None and volume.GetImageData() is not None)
        if key == self._taskKey:
            return
        self._taskKey = key
        if key[0] == AUTO:
            self.setDetected(*self.detectTask(volume))
        else:
            self._detected = (None, "")
            self.ui.detectedTaskLabel.text = ""
            self.onEffectiveTaskChanged()

    def segmentationTask(self, segmentation):
        """The task a segmentation was made for (its attribute), else the task in effect."""
        return self.logic.segmentationTask(segmentation) or self.effectiveTask()

    # --- hooks of the shared widget ---

    def frameWords(self) -> tuple:
        """What the task in effect calls a slice of its input (Training.tasks: ``frame_words``)."""
        task = self.effectiveTask()
        if not task:
            return super().frameWords()
        singular, plural = self.logic.task(task).frame_words
        return _(singular), _(plural)

    def applyToolTip(self) -> str:
        task = self.effectiveTask()
        if task:
            return _("Segment {description}").format(description=self.logic.task(task).description)
        return _("Detect the task from the volume, then segment it")

    def modelTasks(self) -> tuple:
        task = self.effectiveTask()
        return (task,) if task else TASKS

    def modelTask(self):
        return self.effectiveTask()

    def exportTask(self):
        """The task the segmentation was made for (its segments are that task's classes: exporting
        it for another task would write empty labels), else the chosen or detected task."""
        _volume, segmentation = self.reviewNodes()
        return self.segmentationTask(segmentation)

    def prepareRun(self, node) -> bool:
        try:
            task, reason = self.logic.resolveTask(node.task, node.inputVolume, dicomModality(node.inputVolume))
        except Exception as e:
            self.ui.statusLabel.text = _("Cannot tell whether this is CT or echo: {error}\nChoose the task.").format(error=e)
            return False
        if node.task not in self.logic.TASKS:  # detected: the panel says what was found
            self.setDetected(task, reason)
        if not node.modelPath and not self.logic.bundledModelPath(task).is_file():
            self.ui.statusLabel.text = _("No bundled model for task {task}, load a model file.").format(task=task)
            return False
        self._runTask = task
        return True

    def runSegmentation(self, node, progress, cancel):
        return self.logic.process(
            node.inputVolume, node.outputSegmentation, task=self._runTask, modelPath=node.modelPath or None,
            device=node.device, batch=node.batch, progress=progress, cancel=cancel, adaptBn=node.adaptBn)

    def onSegmented(self, segmentation, stats) -> None:
        super().onSegmented(segmentation, stats)
        self.updateMeasurements(stats.get("task") or self._runTask)

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        self.updateTaskInfo()
        super().updateGUIFromParameterNode(caller, event)
        self.updateMeasurementGUI()

    # --- measurements ---

    def updateMeasurements(self, task=None) -> None:
        """Measure the output segmentation (CT: mL per segment; echo: LV area curve, ED and ES)."""
        volume, segmentation = self.reviewNodes()
        if not (volume and segmentation):
            return
        task = task or self.segmentationTask(segmentation)
        ids = {"volumeID": volume.GetID(), "segmentationID": segmentation.GetID()}
        try:
            if not task:
                raise ValueError(_("choose the task first"))
            result = self.logic.measure(segmentation, volume, task)
            if "area_mm2" in result:  # a curve over the frames: shown as a plot
                chart = show_area_curve(result, volume.GetName())
                slicer.modules.plots.logic().ShowChartInLayout(chart)
                self.observeRedSliceNode()  # the layout may have changed
        except Exception as e:
            logging.exception("HeartSeg: measuring failed")
            result = {"task": task, "error": str(e)}
        self._measurement = dict(result, **ids)
        self.updateMeasurementGUI()

    def measurementText(self, m) -> str:
        if "error" in m:
            return _("Cannot measure: {error}").format(error=m["error"])
        if "volumes_ml" in m:
            lines = [_("{name} volume: {ml:.1f} mL").format(name=name, ml=ml) for name, ml in m["volumes_ml"].items()]
            return "\n".join(lines) or _("No segment to measure.")
        lines = []
        if m.get("ed_frame") is not None and m.get("es_frame") is not None:
            lines.append(_("ED: frame {ed}, ES: frame {es}").format(ed=m["ed_frame"], es=m["es_frame"]))
        if m.get("message"):
            lines.append(m["message"])
        return "\n".join(lines)

    def updateMeasurementGUI(self) -> None:
        volume, segmentation = self.reviewNodes()
        m = self._measurement
        current = bool(m and volume and segmentation and m["volumeID"] == volume.GetID()
                       and m["segmentationID"] == segmentation.GetID())
        busy = self.isBusy()
        self.ui.measurementLabel.text = self.measurementText(m) if current else ""
        curve = current and "area_mm2" in m and "error" not in m  # ED and ES are frames of a curve
        for button, key in ((self.ui.goToEdButton, "ed_frame"), (self.ui.goToEsButton, "es_frame")):
            button.setVisible(curve)
            button.enabled = curve and m.get(key) is not None and not busy
        self.ui.measureButton.enabled = bool(volume and segmentation) and not busy

    def goToCardiacPhase(self, key: str) -> None:
        """Move the frame slider (and the red view) to the ED or ES frame."""
        m = self._measurement
        if m and m.get(key) is not None:
            self.goToFrame(int(m[key]))


#
# HeartSegLogic
#


class HeartSegLogic(ScriptedLoadableModuleLogic, HeartSegmentationLogic):
    """CardioSegLib.heartlogic.HeartSegmentationLogic (task detection, segmentation,
    measurements, review, export; no Qt) with the module's parameter node."""

    def getParameterNode(self):
        return HeartSegParameterNode(super().getParameterNode())


#
# HeartSegTest
#


class HeartSegTest(ScriptedLoadableModuleTest):
    """Runs the bundled models on generated held-out CT and echo and checks results and measurements."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_heart_ct()
        self.setUp()
        self.test_echo()
        self.setUp()
        self.test_bad_inputs()
        self.setUp()
        self.test_review_and_export()
        self.setUp()
        self.test_review_panel()

    # --- helpers ---

    @staticmethod
    def _ctVolume(voxels, info, name):
        """A generated CT in the scene. Its arrays are (Z, Y, X) with Z inferior->superior, Y
        anterior->posterior, X right->left (LPS), so IJK->RAS is diag(-dx, -dy, dz)."""
        import numpy as np

        dz, dy, dx = info["spacing"]
        oz, oy, ox = info["origin"]  # patient mm (LPS)
        ijkToRAS = np.array([[-dx, 0, 0, -ox], [0, -dy, 0, -oy], [0, 0, dz, oz], [0, 0, 0, 1.0]])
        return slicer.util.addVolumeFromArray(voxels, ijkToRAS, name=name)

    @staticmethod
    def _echoVolume(frames, info, name):
        """A generated echo clip in the scene, frames as slices, rows down and columns to the right."""
        import numpy as np

        dy, dx = info["pixel_spacing_mm"]
        return slicer.util.addVolumeFromArray(frames, np.diag([-dx, -dy, 1.0, 1.0]), name=name)

    @staticmethod
    def _samePhase(found, truth, contraction) -> bool:
        """Within one frame of the truth, or at the same phase of the clip's other cycle."""
        return abs(found - truth) <= 1 or abs(contraction[found] - contraction[truth]) <= 0.1

    # --- tests ---

    def test_heart_ct(self):
        self.delayDisplay("Checking Python packages")
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        from CardioSegLib.scene import labels_from_segmentation
        from Training import ct

        vol, mask, info = ct.generate_ct(ct.HELD_OUT_SEED_BASE + 3, shape=(48, 160, 160))
        volume = self._ctVolume(vol, info, "HeartSegTestCT")
        logic = HeartSegLogic()
        self.assertTrue(logic.bundledModelPath("heart-ct").is_file(), f"no model at {logic.bundledModelPath('heart-ct')}")
        task, reason = detect_task(volume)
        self.assertEqual(task, "heart-ct", reason)

        self.delayDisplay("Segmenting 48 CT slices with the bundled model")
        calls = []
        segmentation, stats = logic.process(volume, None, progress=lambda done, total, *a: calls.append((done, total)))
        self.assertEqual(stats["task"], "heart-ct")
        self.assertEqual(stats["frames"], 48)
        self.assertTrue(calls and calls[-1] == (48, 48), f"progress calls: {calls}")
        segments = segmentation.GetSegmentation()
        self.assertEqual(segments.GetNumberOfSegments(), 1)
        self.assertEqual(segments.GetNthSegment(0).GetName(), "Heart")

        labels = labels_from_segmentation(segmentation, volume, logic.task("heart-ct").classes)
        self.assertEqual(labels.shape, mask.shape)
        dice = metrics.dice(labels == 1, mask > 0)
        volumeMl = logic.measure(segmentation, volume, "heart-ct")["volumes_ml"]["Heart"]
        self.delayDisplay(f"Dice {dice:.3f}, heart {volumeMl:.1f} mL (truth {info['heart_ml']:.1f} mL)")
        self.assertGreaterEqual(dice, 0.85)
        self.assertLessEqual(abs(volumeMl - info["heart_ml"]), 0.15 * info["heart_ml"])
        self.delayDisplay("Test passed")

    def test_echo(self):
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        from CardioSegLib.scene import labels_from_segmentation
        from Training import echo

        frames, truth, info = echo.generate_clip(echo.HELD_OUT_SEED_BASE + 3, n_frames=16)
        volume = self._echoVolume(frames, info, "HeartSegTestEcho")
        logic = HeartSegLogic()
        self.assertTrue(logic.bundledModelPath("echo").is_file(), f"no model at {logic.bundledModelPath('echo')}")
        task, reason = detect_task(volume)
        self.assertEqual(task, "echo", reason)

        self.delayDisplay("Segmenting 16 echo frames with the bundled model")
        segmentation, stats = logic.process(volume, None)  # task "auto"
        self.assertEqual(stats["task"], "echo")
        self.assertEqual(stats["frames"], 16)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 3)
        labels = labels_from_segmentation(segmentation, volume, logic.task("echo").classes)
        for value, name, minimum in ((1, "LV", 0.85), (2, "myocardium", 0.75), (3, "left atrium", 0.75)):
            dice = metrics.dice(labels == value, truth == value)
            self.delayDisplay(f"{name}: Dice {dice:.3f}")
            self.assertGreaterEqual(dice, minimum, name)

        curve = logic.measure(segmentation, volume, "echo")
        self.assertEqual(len(curve["area_mm2"]), 16)
        for key in ("ed_frame", "es_frame"):
            self.assertIsNotNone(curve[key], curve["message"])
            self.assertTrue(self._samePhase(curve[key], info[key], info["contraction"]),
                            f"{key}: found {curve[key]}, truth {info[key]}")
        chart = show_area_curve(curve, "HeartSegTestEcho")
        self.assertTrue(chart.IsA("vtkMRMLPlotChartNode"))
        self.delayDisplay("Test passed")

    def test_bad_inputs(self):
        """A CT given to the echo task, a single CT slice, and a CT with no heart in it."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import labels_from_segmentation
        from Training import ct

        logic = HeartSegLogic()
        vol, _mask, info = ct.generate_ct(ct.HELD_OUT_SEED_BASE + 4, shape=(16, 96, 96))
        ctVolume = self._ctVolume(vol, info, "HeartSegTestCTAsEcho")
        with self.assertRaises(ValueError) as raised:
            logic.process(ctVolume, None, task="echo")
        self.assertRegex(str(raised.exception), "CT|Hounsfield")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)

        oneSlice = self._ctVolume(vol[8:9], info, "HeartSegTestOneSlice")
        with self.assertRaises(ValueError):
            logic.process(oneSlice, None, task="heart-ct")

        air = (-1000.0 + np.random.default_rng(0).normal(0.0, 15.0, (16, 96, 96))).astype(np.float32)
        noHeart = slicer.util.addVolumeFromArray(air, np.diag([-2.0, -2.0, 5.0, 1.0]), name="HeartSegTestNoHeart")
        segmentation, stats = logic.process(noHeart, None)
        self.assertEqual(stats["task"], "heart-ct")
        self.assertTrue(stats.get("message"), f"no message for an empty result: {stats}")
        labels = labels_from_segmentation(segmentation, noHeart, logic.task("heart-ct").classes)
        self.assertFalse(labels.any())
        self.delayDisplay("Test passed")

    def test_review_and_export(self):
        """Two CT slices marked reviewed, exported for heart-ct, read back equal to the segments."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        import numpy as np

        from CardioSegLib.scene import write_segmentation
        from Training import ct
        from Training.trainingfolder import read_training_folder

        logic = HeartSegLogic()
        vol, mask, info = ct.generate_ct(ct.HELD_OUT_SEED_BASE + 5, shape=(12, 64, 64))
        volume = self._ctVolume(vol, info, "HeartSegReviewCT")
        segmentation = write_segmentation(mask, volume, logic.task("heart-ct").classes)
        segmentation.SetAttribute("CardioSeg.ModelVersion", "selftest")
        withHeart = [int(k) for k in np.flatnonzero(mask.any(axis=(1, 2)))]
        self.assertGreaterEqual(len(withHeart), 2)
        picked = [withHeart[0], withHeart[-1]]
        for k in picked:
            set_review_state(segmentation, k, "reviewed", volume)
        self.assertEqual(logic.reviewSummary(segmentation, volume)["reviewed"], 2)

        folder = Path(slicer.app.temporaryPath) / "HeartSegTest-export"
        shutil.rmtree(folder, ignore_errors=True)
        caseIds = logic.exportReviewedFrames(segmentation, volume, folder, task="heart-ct")
        self.assertEqual(len(caseIds), 2)
        trainingFolder = read_training_folder(folder)
        self.assertEqual(trainingFolder.task, "heart-ct")
        cases = {case.frame_index: case for case in trainingFolder.cases}
        self.assertEqual(sorted(cases), sorted(picked))
        dz, dy, dx = info["spacing"]
        oz, oy, ox = info["origin"]
        for k in picked:
            image, label, geometry = trainingFolder.load(cases[k].case_id)
            self.assertTrue(np.array_equal(label, mask[k]), f"slice {k}: label differs from the segment")
            self.assertTrue(np.array_equal(image, vol[k]), f"slice {k}: image differs from the volume")
            self.assertEqual(image.dtype, vol.dtype)
            # the generator's axes are LPS: identity direction, origin moving up by dz per slice
            self.assertTrue(np.allclose(geometry["direction"], (1, 0, 0, 0, 1, 0, 0, 0, 1), atol=1e-6), geometry)
            self.assertTrue(np.allclose(geometry["origin"], (ox, oy, oz + k * dz), atol=1e-3), geometry)
            self.assertTrue(np.allclose(geometry["spacing"], (dx, dy, dz), atol=1e-4), geometry)
        shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")

    def test_review_panel(self):
        """Task detection in the panel, ED/ES buttons, frame slider, marks, and "slices" for CT."""
        self.assertTrue(ensureDependencies(askConfirmation=False), "dependencies are not available")
        from CardioSegLib.scene import write_segmentation
        from Training import echo

        slicer.util.selectModule("HeartSeg")
        widget = slicer.util.getModuleWidget("HeartSeg")
        frames, truth, info = echo.generate_clip(echo.HELD_OUT_SEED_BASE + 6, n_frames=6, size=(96, 96))
        volume = self._echoVolume(frames, info, "HeartSegPanelEcho")
        segmentation = write_segmentation(truth, volume, HeartSegLogic.task("echo").classes)
        segmentation.SetAttribute(TASK_ATTRIBUTE, "echo")
        parameterNode = widget._parameterNode
        parameterNode.task = "auto"
        parameterNode.inputVolume = volume
        parameterNode.outputSegmentation = segmentation
        slicer.app.processEvents()
        self.assertEqual(widget.effectiveTask(), "echo", widget.ui.detectedTaskLabel.text)
        self.assertEqual(widget.segmentEditorWidget.segmentationNode(), segmentation)
        self.assertEqual(editorSourceVolume(widget.segmentEditorWidget), volume)
        self.assertEqual(int(widget.ui.frameSliderWidget.maximum), 5)
        self.assertEqual(widget.ui.reviewCountLabel.text, "0 of 6 frames reviewed")

        widget.updateMeasurements()
        expected = HeartSegLogic().measure(segmentation, volume, "echo")
        ed, es = expected["ed_frame"], expected["es_frame"]
        self.assertIsNotNone(ed, expected["message"])
        self.assertEqual(widget.ui.measurementLabel.text.splitlines()[0], f"ED: frame {ed}, ES: frame {es}")
        widget.ui.goToEsButton.click()
        slicer.app.processEvents()
        self.assertEqual(widget.currentFrame(), es)
        redSliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        self.assertEqual(HeartSegLogic.frameShownBySlice(redSliceNode, volume), es)
        widget.ui.markReviewedButton.click()
        self.assertEqual(review_states(segmentation, volume)[es], "reviewed")
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 6 frames reviewed")
        widget.ui.goToEdButton.click()
        self.assertEqual(widget.currentFrame(), ed)

        # the same panel speaks of slices for CT
        parameterNode.task = "heart-ct"
        slicer.app.processEvents()
        self.assertEqual(widget.ui.reviewCountLabel.text, "1 of 6 slices reviewed")
        parameterNode.task = "auto"
        self.delayDisplay("Test passed")
