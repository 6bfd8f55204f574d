"""CatheterSeg: segment catheters and guidewires in X-ray fluoroscopy runs.

The input is a grey volume whose slices are frames (T, H, W), e.g. a loaded run. The output is a segmentation node with one "Catheter" segment in
the input's geometry. The heavy packages (torch, MONAI, segmentation-models-pytorch) are never
imported when Slicer loads this module: they are checked, and installed after asking, on the
first click of Segment.
"""
import logging
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
# QSettings key of the training folder that "Export reviewed frames" writes to (shared by the
# CardioSeg modules, so the user chooses it once).
EXPORT_FOLDER_SETTING = "CardioSeg/ExportFolder"
SEGMENT_EDITOR_SINGLETON_TAG = "CatheterSeg"


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
    """The user models folder, shared with `cardioseg install-model` (Training.usermodels)."""
    from Training.usermodels import user_models_dir

    return user_models_dir()


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
        self._exporting = False
        self._exportCancelRequested = False
        self.segmentEditorWidget = None
        self._redSliceNode = None
        self._alignedVolumeID = None  # volume whose frames the red view was last aligned to
        self._syncingFrame = False

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

        # Review and export: Segment Editor on the output segmentation, frame slider, marks
        self.segmentEditorWidget = slicer.qMRMLSegmentEditorWidget()
        self.segmentEditorWidget.setMaximumNumberOfUndoStates(10)
        self.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.getSegmentEditorNode())
        self.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        # input and output are chosen in "Inputs and outputs"; the editor follows them
        self.segmentEditorWidget.segmentationNodeSelectorVisible = False
        _setFirstProperty(self.segmentEditorWidget, ("sourceVolumeNodeSelectorVisible",
                                                     "masterVolumeNodeSelectorVisible"), False)
        self.ui.segmentEditorFrame.layout().addWidget(self.segmentEditorWidget)
        self.ui.frameSliderWidget.connect("valueChanged(double)", self.onFrameSliderChanged)
        self.ui.nextUnreviewedButton.connect("clicked(bool)", self.onNextUnreviewedButton)
        self.ui.markReviewedButton.connect("clicked(bool)", lambda checked=False: self.onMarkButton("reviewed"))
        self.ui.excludeButton.connect("clicked(bool)", lambda checked=False: self.onMarkButton("excluded"))
        self.ui.unmarkButton.connect("clicked(bool)", lambda checked=False: self.onMarkButton("unreviewed"))
        self.ui.exportFolderPathLineEdit.currentPath = qt.QSettings().value(EXPORT_FOLDER_SETTING, "") or ""
        self.ui.exportFolderPathLineEdit.connect("currentPathChanged(QString)", self.onExportFolderChanged)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCaseButton)
        self.observeRedSliceNode()

        self.ui.progressBar.setVisible(False)
        self.ui.exportProgressBar.setVisible(False)
        self.ui.statusLabel.text = ""
        self.ui.exportStatusLabel.text = ""
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRequested = True
        self._exportCancelRequested = True
        self.removeObservers()

    def enter(self) -> None:
        self.populateModels()
        self.initializeParameterNode()
        if self.segmentEditorWidget is not None:
            self.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.getSegmentEditorNode())
            self.segmentEditorWidget.installKeyboardShortcuts()
            self.segmentEditorWidget.updateWidgetFromMRML()
        self.observeRedSliceNode()

    def exit(self) -> None:
        if self.segmentEditorWidget is not None:
            self.segmentEditorWidget.setActiveEffect(None)
            self.segmentEditorWidget.uninstallKeyboardShortcuts()
            self.segmentEditorWidget.removeViewObservations()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRequested = True
        self._exportCancelRequested = True
        if self.segmentEditorWidget is not None:
            self.segmentEditorWidget.setSegmentationNode(None)
            self.segmentEditorWidget.removeViewObservations()
        self._alignedVolumeID = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.segmentEditorWidget is not None:  # the scene's editor node went with the scene
            self.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.getSegmentEditorNode())
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
            canApply = bool(node and node.inputVolume) and not self._exporting
            self.ui.applyButton.enabled = canApply
            self.ui.applyButton.toolTip = (_("Segment catheters in every frame of the input volume") if canApply
                                           else _("Select an input volume"))
        for widget in (self.ui.inputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            widget.enabled = not self._running and not self._exporting
        self.updateReviewGUI()

    def reviewNodes(self):
        """(input volume, output segmentation) under review; either may be None."""
        node = self._parameterNode
        if node is None:
            return None, None
        return node.inputVolume, node.outputSegmentation

    def updateReviewGUI(self) -> None:
        """Segment Editor inputs, frame slider range, the current frame's state and the count."""
        volume, segmentation = self.reviewNodes()
        editor = self.segmentEditorWidget
        if editor is not None:
            if editor.segmentationNode() != segmentation:
                editor.setSegmentationNode(segmentation)
            if _editorSourceVolume(editor) != volume:
                _setEditorSourceVolume(editor, volume)
        total = self.logic.frameCount(volume)
        slider = self.ui.frameSliderWidget
        wasBlocked = slider.blockSignals(True)
        slider.maximum = max(total - 1, 0)
        slider.blockSignals(wasBlocked)
        slider.enabled = total > 0
        busy = self._running or self._exporting
        canReview = bool(volume and segmentation) and not busy
        self.ui.segmentEditorFrame.enabled = not busy  # no edits while the labels are read or replaced
        self.ui.exportFolderPathLineEdit.enabled = not self._exporting
        for button in (self.ui.nextUnreviewedButton, self.ui.markReviewedButton, self.ui.excludeButton,
                       self.ui.unmarkButton):
            button.enabled = canReview
        if not (volume and segmentation):
            self.ui.frameStateLabel.text = ""
            self.ui.reviewCountLabel.text = (_("Select an input volume and its segmentation (run Segment) to review frames")
                                             if total else "")
            reviewed = 0
        else:
            summary = self.logic.reviewSummary(segmentation, volume)
            reviewed = summary["reviewed"]
            state = self.logic.reviewStates(segmentation, volume)[self.currentFrame()] if total else ""
            self.ui.frameStateLabel.text = {"reviewed": _("reviewed"), "excluded": _("excluded"),
                                            "unreviewed": _("not reviewed")}.get(state, "")
            text = _("{reviewed} of {total} frames reviewed").format(reviewed=reviewed, total=total)
            if summary["excluded"]:
                text += _(", {excluded} excluded").format(excluded=summary["excluded"])
            self.ui.reviewCountLabel.text = text
        if self._exporting:
            self.ui.exportButton.text = _("Cancel export")
            self.ui.exportButton.enabled = True
        else:
            self.ui.exportButton.text = _("Export reviewed frames")
            folder = self.ui.exportFolderPathLineEdit.currentPath
            self.ui.exportButton.enabled = bool(reviewed and folder) and not self._running
            self.ui.exportButton.toolTip = (
                _("Write the {n} reviewed frames into {folder}").format(n=reviewed, folder=folder) if reviewed and folder
                else _("Choose a training folder") if reviewed else _("Mark the frames that are correct first"))
        self.ui.loadCaseButton.enabled = bool(self.ui.exportFolderPathLineEdit.currentPath) and not (
            self._running or self._exporting)

    def populateModels(self) -> None:
        """Bundled model first, then the installed models for this task."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("Bundled: {name}").format(name=self.logic.bundledModelPath().name), "")
        # reading a model's task needs torch: installed models show up once it is there
        for model in self.logic.userModels(userModelsDir()) if _torchImportable() else []:
            if model.broken:
                logging.warning(f"CatheterSeg: skipping {model.path}: {model.error}")
            else:
                combo.addItem(f"{model.path.name} (v{model.spec.version})", str(model.path))
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
                self.populateModels()  # torch is there now: list the installed models
                self.updateGUIFromParameterNode()
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
            stored = self.logic.storeUserModel(path, userModelsDir())  # checks it first
        except Exception as e:
            slicer.util.errorDisplay(_("This model file cannot be installed:\n{error}").format(error=e))
            return
        from Training.modelfile import read_spec

        spec = read_spec(stored)
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
        node = self._parameterNode
        if node.outputSegmentation and node.inputVolume:
            marked = self.logic.reviewSummary(node.outputSegmentation, node.inputVolume)
            if (marked["reviewed"] or marked["excluded"]) and not slicer.util.confirmOkCancelDisplay(
                    _("'{name}' has {n} reviewed or excluded frames. Segmenting again replaces their labels "
                      "with the model's and clears the review marks. Export the reviewed frames first if you "
                      "want to keep them.\n\nSegment anyway?").format(
                        name=node.outputSegmentation.GetName(), n=marked["reviewed"] + marked["excluded"]),
                    _("CatheterSeg - Segment")):
                return
        if not self.prepareDependencies():
            return
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

    # --- review ---

    def currentFrame(self) -> int:
        return int(round(self.ui.frameSliderWidget.value))

    def redSliceWidget(self):
        layoutManager = slicer.app.layoutManager()
        return layoutManager.sliceWidget("Red") if layoutManager is not None else None

    def observeRedSliceNode(self) -> None:
        """Follow the red view: scrolling it through the frames moves the frame slider."""
        sliceWidget = self.redSliceWidget()
        sliceNode = sliceWidget.mrmlSliceNode() if sliceWidget is not None else None
        if sliceNode is self._redSliceNode:
            return
        if self._redSliceNode is not None:
            self.removeObserver(self._redSliceNode, vtk.vtkCommand.ModifiedEvent, self.onRedSliceModified)
        self._redSliceNode = sliceNode
        if sliceNode is not None:
            self.addObserver(sliceNode, vtk.vtkCommand.ModifiedEvent, self.onRedSliceModified)

    def showFrame(self, frame: int) -> None:
        """Move the red slice view to frame ``frame`` of the input (aligning it to the frames the
        first time, or when the view was turned away from them)."""
        volume, _segmentation = self.reviewNodes()
        sliceWidget = self.redSliceWidget()
        if volume is None or sliceWidget is None or frame >= self.logic.frameCount(volume):
            return
        sliceNode = sliceWidget.mrmlSliceNode()
        self._syncingFrame = True
        try:
            try:
                aligned = self.logic.sliceShowsFrames(sliceNode, volume)
                center = self.logic.frameCenter(volume, frame)
            except ValueError as e:  # a non-linear transform on the volume
                self.ui.frameStateLabel.text = str(e)
                return
            if self._alignedVolumeID != volume.GetID() or not aligned:
                slicer.util.setSliceViewerLayers(background=volume)
                sliceNode.SetOrientation(self.logic.frameOrientation(volume))
                sliceNode.RotateToVolumePlane(volume)
                sliceWidget.sliceLogic().FitSliceToAll()
                self._alignedVolumeID = volume.GetID()
            sliceNode.JumpSliceByOffsetting(*center)
        finally:
            self._syncingFrame = False

    def onRedSliceModified(self, caller=None, event=None) -> None:
        if self._syncingFrame or self._running:
            return
        volume, _segmentation = self.reviewNodes()
        if volume is None or self._alignedVolumeID != volume.GetID():
            return
        frame = self.logic.frameShownBySlice(caller, volume)
        if frame is None or frame == self.currentFrame():
            return
        slider = self.ui.frameSliderWidget
        wasBlocked = slider.blockSignals(True)
        slider.value = frame
        slider.blockSignals(wasBlocked)
        self.updateReviewGUI()

    def onFrameSliderChanged(self, value) -> None:
        self.showFrame(int(round(value)))
        self.updateReviewGUI()

    def goToFrame(self, frame: int) -> None:
        if self.currentFrame() != frame:
            self.ui.frameSliderWidget.value = frame  # moves the view through onFrameSliderChanged
        else:
            self.showFrame(frame)
            self.updateReviewGUI()

    def onNextUnreviewedButton(self, checked=False) -> None:
        volume, segmentation = self.reviewNodes()
        if not (volume and segmentation):
            return
        frame = self.logic.nextUnreviewed(segmentation, volume, after=self.currentFrame())
        if frame is None:
            self.ui.exportStatusLabel.text = _("Every frame is reviewed or excluded.")
            return
        self.goToFrame(frame)

    def onMarkButton(self, state: str) -> None:
        """Set the current frame's review state: only ever on the user's click."""
        volume, segmentation = self.reviewNodes()
        if not (volume and segmentation):
            return
        self.logic.setReviewState(segmentation, volume, self.currentFrame(), state)
        self.updateReviewGUI()

    # --- export ---

    def onExportFolderChanged(self, path) -> None:
        qt.QSettings().setValue(EXPORT_FOLDER_SETTING, path)  # remembered for the next session
        self.updateReviewGUI()

    def onExportButton(self, checked=False) -> None:
        if self._exporting:
            self._exportCancelRequested = True
            self.ui.exportStatusLabel.text = _("Cancelling after the current frame...")
            return
        volume, segmentation = self.reviewNodes()
        folder = self.ui.exportFolderPathLineEdit.currentPath
        if not (volume and segmentation and folder):
            return
        self.ui.exportFolderPathLineEdit.addCurrentPathToHistory()
        self._exporting, self._exportCancelRequested = True, False
        self.updateGUIFromParameterNode()
        self.ui.exportProgressBar.setVisible(True)
        self.ui.exportProgressBar.value = 0
        self.ui.exportStatusLabel.text = _("Exporting...")
        slicer.app.processEvents()

        def progress(done, total, *unused):
            total = total or done  # None when the number of frames is not known in advance
            self.ui.exportProgressBar.maximum = max(total, 1)
            self.ui.exportProgressBar.value = done
            self.ui.exportStatusLabel.text = _("frame {done}/{total}").format(done=done, total=total)
            slicer.app.processEvents()  # keeps the UI alive and lets Cancel through

        try:
            caseIds = self.logic.exportReviewedFrames(
                segmentation, volume, folder, progress=progress, cancel=lambda: self._exportCancelRequested)
        except Exception as e:
            from Training.trainingfolder import TrainingFolderError

            if self._exportCancelRequested:
                self.ui.exportStatusLabel.text = _("Export cancelled. The training folder is valid; the frames "
                                                   "not yet written are still marked reviewed in the scene.")
            elif isinstance(e, (TrainingFolderError, OSError)):
                self.ui.exportStatusLabel.text = _("Export failed: {error}").format(error=e)
                slicer.util.errorDisplay(
                    _("The reviewed frames could not be written to the training folder:\n{error}\n\n"
                      "Nothing was lost: the segmentation and its review marks are unchanged, and the cases "
                      "already in the folder are intact. Free some space or choose another folder, then "
                      "export again.").format(error=e), windowTitle=_("CatheterSeg - Export"))
            elif isinstance(e, ValueError):
                self.ui.exportStatusLabel.text = _("Cannot export: {error}").format(error=e)
                slicer.util.errorDisplay(_("Cannot export:\n{error}").format(error=e),
                                         windowTitle=_("CatheterSeg - Export"))
            else:
                self.ui.exportStatusLabel.text = _("Export failed.")
                logging.exception("CatheterSeg export failed")
                slicer.util.errorDisplay(_("Export failed:\n{error}\n\nThe segmentation and its review marks "
                                           "are unchanged.").format(error=e), windowTitle=_("CatheterSeg - Export"))
        else:
            self.ui.exportStatusLabel.text = _("Exported {n} frames to {folder}").format(n=len(caseIds), folder=folder)
        finally:
            self._exporting = False
            self.ui.exportProgressBar.setVisible(False)
            self.updateGUIFromParameterNode()

    def onLoadCaseButton(self, checked=False) -> None:
        folder = self.ui.exportFolderPathLineEdit.currentPath
        if not folder:
            return
        try:
            caseIds = self.logic.trainingFolderCases(folder)
        except Exception as e:
            slicer.util.errorDisplay(_("Cannot read the training folder:\n{error}").format(error=e))
            return
        if not caseIds:
            slicer.util.infoDisplay(_("The training folder has no cases yet."))
            return
        caseId = qt.QInputDialog.getItem(slicer.util.mainWindow(), _("Load case"), _("Case:"), caseIds, 0, False)
        if not caseId:
            return
        try:
            volume, segmentation = self.logic.loadCase(folder, caseId)
        except Exception as e:
            logging.exception("CatheterSeg: loading a case failed")
            slicer.util.errorDisplay(_("Cannot load case {case}:\n{error}").format(case=caseId, error=e))
            return
        if self._parameterNode is not None:
            self._parameterNode.inputVolume = volume
            self._parameterNode.outputSegmentation = segmentation
        self.goToFrame(0)
        self.ui.exportStatusLabel.text = _("Loaded {case}. Export it again after fixing it to replace the case.").format(
            case=caseId)


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
    def userModels(folder=None) -> list:
        """Installed catheter models (Training.usermodels.InstalledModel), newest first; broken
        files are included, with their error."""
        from Training.usermodels import list_models

        return list_models(task=TASK, folder=folder)

    def checkModelFile(self, path):
        """Spec of a model file that loads; raises (ModelFileError or ValueError) unless it is a catheter model."""
        from Training.usermodels import check_model

        return check_model(path, task=TASK)

    def storeUserModel(self, path, folder=None) -> Path:
        """Check a model file and install it into the user models folder (Training.usermodels:
        never over a different file, never into the bundled models folder)."""
        from Training.usermodels import install_model

        return install_model(path, task=TASK, folder=folder)

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
        if outputSegmentation is not None:
            # the labels the marks were about are gone: start the review again
            from CardioSegLib.review import clear_review_states

            clear_review_states(segmentation)
        return segmentation, stats

    # --- review (MRML only, see CardioSegLib.review) ---

    @staticmethod
    def getSegmentEditorNode():
        """The module's own Segment Editor parameter node (a scene singleton, created on demand)."""
        node = slicer.mrmlScene.GetSingletonNode(SEGMENT_EDITOR_SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag(SEGMENT_EDITOR_SINGLETON_TAG)
            node = slicer.mrmlScene.AddNode(node)
        return node

    @staticmethod
    def frameCount(volume) -> int:
        from CardioSegLib.review import frame_count

        return frame_count(volume)

    @staticmethod
    def reviewStates(segmentation, volume) -> list:
        """"reviewed" / "excluded" / "unreviewed" for each frame of volume."""
        from CardioSegLib.review import review_states

        return review_states(segmentation, volume)

    @staticmethod
    def setReviewState(segmentation, volume, frame: int, state: str) -> None:
        from CardioSegLib.review import set_review_state

        set_review_state(segmentation, frame, state, volume)

    @staticmethod
    def nextUnreviewed(segmentation, volume, after: int = -1):
        from CardioSegLib.review import next_unreviewed

        return next_unreviewed(segmentation, volume, after)

    @staticmethod
    def reviewSummary(segmentation, volume) -> dict:
        """Frame counts: "reviewed", "excluded", "unreviewed", "total"."""
        from CardioSegLib.review import STATES, review_states

        states = review_states(segmentation, volume)
        summary = {state: states.count(state) for state in STATES}
        summary["total"] = len(states)
        return summary

    @staticmethod
    def frameCenter(volume, frame: int) -> tuple:
        from CardioSegLib.review import frame_center_ras

        return frame_center_ras(volume, frame)

    @staticmethod
    def frameOrientation(volume) -> str:
        from CardioSegLib.review import frame_orientation

        return frame_orientation(volume)

    @staticmethod
    def sliceShowsFrames(sliceNode, volume) -> bool:
        from CardioSegLib.review import shows_frames

        return shows_frames(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()), volume)

    @staticmethod
    def frameShownBySlice(sliceNode, volume):
        """Frame index a slice view shows, or None if it is not in the frames' plane."""
        from CardioSegLib.review import frame_at_ras, shows_frames

        try:
            sliceToRAS = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())
            if not shows_frames(sliceToRAS, volume):
                return None
            return frame_at_ras(volume, sliceToRAS[:3, 3])
        except ValueError:
            return None

    # --- export (see CardioSegLib.export and Training.trainingfolder) ---

    def exportReviewedFrames(self, segmentation, volume, folder, progress=None, cancel=None) -> list:
        """Write the reviewed frames into the training folder; returns the case IDs written.
        Raises ValueError (nothing to export, geometry), TrainingFolderError (folder), Cancelled."""
        from CardioSegLib.export import export_reviewed_frames

        start = time.perf_counter()
        caseIds = export_reviewed_frames(segmentation, volume, folder, TASK, progress=progress, cancel=cancel)
        logging.info(f"CatheterSeg: exported {len(caseIds)} frames to {folder} in {time.perf_counter() - start:.2f} s")
        return caseIds

    @staticmethod
    def trainingFolderCases(folder) -> list:
        from Training.trainingfolder import read_training_folder

        return [case.case_id for case in read_training_folder(folder).cases]

    @staticmethod
    def loadCase(folder, caseId):
        """(volume, segmentation) of a training folder case, added to the scene for review."""
        from CardioSegLib.export import load_case

        return load_case(folder, caseId, TASK)


def _setFirstProperty(widget, names, value) -> None:
    """Set the first of ``names`` the widget has (properties renamed across Slicer versions)."""
    for name in names:
        if hasattr(widget, name):
            setattr(widget, name, value)
            return


def _editorSourceVolume(editor):
    getter = getattr(editor, "sourceVolumeNode", None) or editor.masterVolumeNode  # Slicer < 5.4
    return getter()


def _setEditorSourceVolume(editor, volume) -> None:
    setter = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # Slicer < 5.4
    setter(volume)


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
