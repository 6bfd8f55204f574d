"""CatheterSeg: segment catheters and guidewires in X-ray fluoroscopy runs.

The input is a grey volume whose slices are frames (T, H, W), e.g. a loaded run. The output is a segmentation node with one "Catheter" segment in
the input's geometry. The heavy packages (torch, MONAI, segmentation-models-pytorch) are never
imported when Slicer loads this module: they are checked, and installed after asking, on the
first click of Segment.
"""
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

TASK = "catheter"
MODULE_DIR = Path(__file__).resolve().parent


def _addSharedPackagesToPath() -> None:
    """Make CardioSegLib and Training importable.

    Source tree: they sit next to the module folder (repo root). Build tree and installed
    extension: CMake copies them next to this file (the qt-scripted-modules folder).
    """
    for folder in (MODULE_DIR, MODULE_DIR.parent):
        if (folder / "CardioSegLib").is_dir() and (folder / "Training").is_dir():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return


_addSharedPackagesToPath()


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
<b>Segment</b>. Correct the result in Segment Editor and export the reviewed frames for
retraining. PyTorch and the other Python packages are installed, after asking, on first use.
""")
        self.parent.acknowledgementText = _("""
Part of the CardioSeg extension. Built on 3D Slicer's scripted module template, PyTorch,
MONAI and segmentation-models-pytorch.
""")


#
# Dependencies
#


REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
# Provided by the PyTorch extension (or by Slicer itself); never pulled in by pip here.
PROVIDED_PACKAGES = ["torch", "torchvision", "SimpleITK"]


def _torchImportable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _ensureTorch(askConfirmation: bool) -> bool:
    """Install PyTorch through the PyTorch extension (PyTorchUtils); False if not done."""
    if _torchImportable():
        return True
    try:
        import PyTorchUtils
    except ImportError:
        # No PyTorch extension: offer the plain PyPI wheel as a fallback.
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("CatheterSeg needs PyTorch. The recommended way is to install the 'PyTorch' extension "
              "from the Extensions Manager, which picks the build that matches your GPU.\n\n"
              "Click OK to install the default PyTorch from PyPI now instead (large download)."),
            _("CatheterSeg - Install PyTorch"),
        ):
            return False
        slicer.util.pip_install(["torch", "torchvision"])
        return _torchImportable()
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if torchLogic.torchInstalled():
        return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        _("CatheterSeg runs its model with PyTorch, which is not installed yet. "
          "Install it now with the PyTorch extension? This needs a network connection and may take minutes."),
        _("CatheterSeg - Install PyTorch"),
    ):
        return False
    return torchLogic.installTorch(askConfirmation=askConfirmation) is not None


def _missingRequirements(requirementsFile: Path) -> list:
    """Requirement strings of requirements.txt that are not installed (fallback for old Slicer)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for line in requirementsFile.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        try:
            if version(req.name) not in req.specifier:
                missing.append(line)
        except PackageNotFoundError:
            missing.append(line)
    return missing


def ensureDependencies(askConfirmation: bool = True) -> bool:
    """Make torch and the packages of Resources/requirements.txt importable.

    Asks before installing anything (unless askConfirmation is False, as in the self-test).
    Returns False if the user declined. Never called at import time.
    """
    if not _ensureTorch(askConfirmation):
        return False
    try:
        import slicer.pydeps as pydeps  # Slicer >= 5.11
    except ImportError:
        pydeps = None
    if pydeps is not None:
        import inspect

        options = {"requester": "CatheterSeg", "prompt_install": askConfirmation}
        accepted = inspect.signature(pydeps.pip_ensure).parameters
        if "skip_packages" in accepted:
            options["skip_packages"] = PROVIDED_PACKAGES
        if "skip_in_testing" in accepted:
            options["skip_in_testing"] = False  # the self-test needs the real packages
        try:
            pydeps.pip_ensure(pydeps.load_requirements(REQUIREMENTS_FILE), **options)
        except RuntimeError:  # raised when the user declines
            return False
        return True
    # Older Slicer: check, ask, pip_install.
    missing = _missingRequirements(REQUIREMENTS_FILE)
    if not missing:
        return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        _("CatheterSeg needs these Python packages:\n\n{packages}\n\nInstall them now?").format(
            packages="\n".join(missing)),
        _("CatheterSeg - Install Python packages"),
    ):
        return False
    slicer.util.pip_install(missing)
    return True


def userModelsDir() -> Path:
    """Folder where model files loaded by the user are kept (created on demand)."""
    return Path(slicer.app.slicerUserSettingsFilePath).parent / "CardioSeg" / "Models"


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


class CatheterSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and calls the logic; no processing here."""

    DEVICE_LABELS = {"cpu": "CPU", "cuda": "GPU (CUDA)"}

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._cancelRequested = False
        self._cudaAvailable = None  # unknown until the dependencies are there

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CatheterSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = CatheterSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModelButton)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.text = ""
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRequested = True
        self.removeObservers()

    def enter(self) -> None:
        self.populateModels()
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRequested = True
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[CatheterSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with a "SlicerParameterName" property in the .ui are bound here.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateDeviceChoices()
        self.updateGUIFromParameterNode()

    # --- GUI state ---

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        """Model selector and button state; the bound widgets update themselves."""
        node = self._parameterNode
        if node is not None:
            combo = self.ui.modelComboBox
            wasBlocked = combo.blockSignals(True)
            index = combo.findData(node.modelPath)
            if index < 0 and node.modelPath:  # a model file outside the user models folder
                combo.addItem(Path(node.modelPath).name, node.modelPath)
                index = combo.count - 1
            combo.currentIndex = max(index, 0)
            combo.blockSignals(wasBlocked)
        if self._running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop after the current batch of frames")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Segment")
            canApply = bool(node and node.inputVolume)
            self.ui.applyButton.enabled = canApply
            self.ui.applyButton.toolTip = (_("Segment catheters in every frame of the input volume") if canApply
                                           else _("Select an input volume"))
        for widget in (self.ui.inputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            widget.enabled = not self._running

    def populateModels(self) -> None:
        """Bundled model first, then the model files in the user models folder."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("Bundled: {name}").format(name=self.logic.bundledModelPath().name), "")
        for path in self.logic.userModels(userModelsDir()):
            combo.addItem(path.name, str(path))
        combo.blockSignals(wasBlocked)

    def updateDeviceChoices(self) -> None:
        """Readable labels; GPU disabled once torch says there is no CUDA device."""
        combo = self.ui.deviceComboBox
        for index, device in enumerate(["cpu", "cuda"]):
            if index < combo.count:
                combo.setItemText(index, self.DEVICE_LABELS[device])
        if combo.count > 1 and self._cudaAvailable is not None:
            item = combo.model().item(1) if hasattr(combo.model(), "item") else None
            if item is not None:
                item.setEnabled(self._cudaAvailable)
                item.setToolTip("" if self._cudaAvailable else _("No CUDA GPU was found by PyTorch"))
            if not self._cudaAvailable and self._parameterNode and self._parameterNode.device == "cuda":
                self._parameterNode.device = "cpu"

    # --- actions ---

    def onModelSelected(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.modelPath = self.ui.modelComboBox.itemData(index) or ""

    def prepareDependencies(self) -> bool:
        """Install what is missing (after asking) and learn whether CUDA is usable."""
        try:
            if not ensureDependencies(askConfirmation=True):
                return False
            if self._cudaAvailable is None:
                self._cudaAvailable = self.logic.cudaAvailable()
                self.updateDeviceChoices()
        except Exception as e:
            logging.exception("CatheterSeg: dependency installation failed")
            slicer.util.errorDisplay(_("Failed to install the Python packages CatheterSeg needs:\n{error}").format(error=e))
            return False
        return True

    def onLoadModelButton(self, checked=False) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Load CardioSeg model file"), "",
            _("CardioSeg model (*.safetensors)"))
        if not path or not self.prepareDependencies():
            return
        try:
            spec = self.logic.checkModelFile(path)
        except Exception as e:
            slicer.util.errorDisplay(_("This model file cannot be used:\n{error}").format(error=e))
            return
        try:
            stored = self.logic.storeUserModel(path, userModelsDir())
        except OSError as e:
            slicer.util.errorDisplay(_("Failed to store the model file:\n{error}").format(error=e))
            return
        self.populateModels()
        if self._parameterNode is not None:
            self._parameterNode.modelPath = str(stored)
        self.updateGUIFromParameterNode()
        self.ui.statusLabel.text = _("Loaded model {name} (version {version})").format(
            name=stored.name, version=spec.version)

    def onApplyButton(self, checked=False) -> None:
        if self._running:
            self._cancelRequested = True  # seen by the cancel callback after processEvents
            self.ui.statusLabel.text = _("Cancelling...")
            return
        if not self.prepareDependencies():
            return
        node = self._parameterNode
        self._running, self._cancelRequested = True, False
        self.updateGUIFromParameterNode()
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Loading model...")
        slicer.app.processEvents()
        started = time.perf_counter()

        def progress(done, total, *unused):
            elapsed = max(time.perf_counter() - started, 1e-6)
            self.ui.progressBar.maximum = total
            self.ui.progressBar.value = done
            self.ui.statusLabel.text = _("frame {done}/{total}, {fps:.1f} frames/s").format(
                done=done, total=total, fps=done / elapsed)
            slicer.app.processEvents()  # keeps the UI alive and lets Cancel through

        try:
            segmentation, stats = self.logic.process(
                node.inputVolume, node.outputSegmentation, modelPath=node.modelPath or None,
                device=node.device, threshold=node.threshold, batch=node.batch,
                progress=progress, cancel=lambda: self._cancelRequested)
        except Exception as e:
            if self._cancelRequested:
                self.ui.statusLabel.text = _("Cancelled; the segmentation was not changed.")
            else:
                self.ui.statusLabel.text = _("Failed.")
                logging.exception("CatheterSeg failed")
                slicer.util.errorDisplay(_("Segmentation failed:\n{error}").format(error=e))
        else:
            if self._parameterNode is not None and segmentation.IsA("vtkMRMLSegmentationNode"):
                self._parameterNode.outputSegmentation = segmentation  # the next run reuses it
            self.ui.statusLabel.text = _("{frames} frames in {seconds:.1f} s ({fps:.1f} frames/s)").format(
                frames=stats["frames"], seconds=stats["seconds"], fps=stats["frames_per_second"])
        finally:
            self._running = False
            self.ui.progressBar.setVisible(False)
            self.updateGUIFromParameterNode()


#
# CatheterSegLogic
#


class CatheterSegLogic(ScriptedLoadableModuleLogic):
    """Model selection and segmentation; usable without the GUI, e.g. from the Python console."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return CatheterSegParameterNode(super().getParameterNode())

    @staticmethod
    def task():
        from Training.tasks import get_task

        return get_task(TASK)

    def bundledModelPath(self) -> Path:
        """The model shipped with the module (Training.tasks finds it in source and installed trees)."""
        return self.task().bundled_model

    @staticmethod
    def userModels(folder: Path) -> list:
        """Model files in the user models folder, newest first."""
        folder = Path(folder)
        if not folder.is_dir():
            return []
        return sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)

    def checkModelFile(self, path):
        """Spec of a model file; raises (ModelFileError or ValueError) unless it is a catheter model."""
        from Training.modelfile import read_spec

        spec = read_spec(path)
        if spec.task != TASK:
            raise ValueError(f"{Path(path).name} is a model for task '{spec.task}', not '{TASK}'")
        return spec

    def storeUserModel(self, path, folder: Path) -> Path:
        """Copy a checked model file into the user models folder; an existing different file
        with the same name is kept and the copy gets a numbered name."""
        src, folder = Path(path), Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / src.name
        n = 1
        while dest.exists():
            if dest.resolve() == src.resolve() or _sameContent(dest, src):
                return dest
            dest = folder / f"{src.stem}-{n}{src.suffix}"
            n += 1
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest

    @staticmethod
    def cudaAvailable() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def process(self, inputNode, outputSegmentation=None, modelPath=None, device="cpu", threshold=0.5,
                batch=8, progress=None, cancel=None):
        """Segment every frame of inputNode into outputSegmentation (created if None).

        progress(done, total) is called after each batch; cancel() returning True stops the run.
        Returns (segmentationNode, stats) with stats "frames", "seconds", "frames_per_second".
        """
        if inputNode is None:
            raise ValueError("no input volume")
        from CardioSegLib.segment import segment_node

        model = Path(modelPath) if modelPath else self.bundledModelPath()
        start = time.perf_counter()
        logging.info(f"CatheterSeg: {inputNode.GetName()} with {model.name} on {device}")
        segmentation, stats = segment_node(
            inputNode, str(model), task=TASK, segmentation_node=outputSegmentation, device=device,
            batch=int(batch), threshold=float(threshold), progress=progress, cancel=cancel)
        logging.info(f"CatheterSeg: done in {time.perf_counter() - start:.2f} s")
        return segmentation, stats


def _sameContent(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


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
