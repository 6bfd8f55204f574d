"""The widget base class of the CardioSeg modules.

A module subclasses it and sets a few class attributes (module name, requirements file); its
Logic comes from CardioSegLib (CardioSegLib.logic.SegmentationLogic and the module's subclass,
no Qt). The widget base has everything CatheterSeg and HeartSeg share: model selector and "Load
model file...", device choices, Segment/Cancel with progress and status, review panel (Segment
Editor, frame slider following the red view, marks), export with progress/cancel, and loading a
case back. It only binds the .ui and calls the Logic and CardioSegLib.
"""
import contextlib
import logging
import time
from pathlib import Path

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from CardioSegLib.geometry import frame_center_ras, frame_count, frame_orientation
from CardioSegLib.reviewstates import next_unreviewed, review_states, set_review_state
from CardioSegLib.sequencebrowser import browser_of_proxy, review_nodes, show_item, shown_item

from .dependencies import ensureDependencies, torchImportable, userModelsDir

# QSettings key of the training folder that "Export reviewed frames" writes to (shared by the
# CardioSeg modules, so the user chooses it once).
EXPORT_FOLDER_SETTING = "CardioSeg/ExportFolder"


def setFirstProperty(widget, names, value) -> None:
    """Set the first of ``names`` the widget has (properties renamed across Slicer versions)."""
    for name in names:
        if hasattr(widget, name):
            setattr(widget, name, value)
            return


def editorSourceVolume(editor):
    getter = getattr(editor, "sourceVolumeNode", None) or editor.masterVolumeNode  # Slicer < 5.4
    return getter()


def setEditorSourceVolume(editor, volume) -> None:
    setter = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # Slicer < 5.4
    setter(volume)


class LongAction:
    """Busy state, progress bar, status label and Cancel of one long action of the panel
    (Segment, Export). The action runs inside ``with action.running(text):``; the logic gets
    ``action.cancelled`` as its cancel callable and a progress callback that calls
    ``action.show``. ``onBusyChanged`` updates the buttons when the action starts and ends."""

    def __init__(self, onBusyChanged) -> None:
        self.onBusyChanged = onBusyChanged
        self.progressBar = None  # bound in the widget's setup, once the .ui is loaded
        self.statusLabel = None
        self.busy = False
        self.cancelRequested = False
        self._started = 0.0

    def bind(self, progressBar, statusLabel) -> None:
        self.progressBar, self.statusLabel = progressBar, statusLabel
        self.progressBar.setVisible(False)
        self.statusLabel.text = ""

    def cancelled(self) -> bool:
        """The logic's ``cancel`` callable: True once Cancel was clicked (or the scene closes)."""
        return self.cancelRequested

    def requestCancel(self, text=None) -> None:
        self.cancelRequested = True  # seen by the logic's cancel callback after processEvents
        if text is not None:
            self.statusLabel.text = text

    @contextlib.contextmanager
    def running(self, text):
        """Busy with the progress bar shown from the start of the block to its end (also on an error)."""
        self.busy, self.cancelRequested = True, False
        self.onBusyChanged()
        self.progressBar.setVisible(True)
        self.progressBar.value = 0
        self.statusLabel.text = text
        slicer.app.processEvents()
        self._started = time.perf_counter()
        try:
            yield self
        finally:
            self.busy = False
            self.progressBar.setVisible(False)
            self.onBusyChanged()

    def show(self, done, total, text) -> None:
        """Progress ``done`` of ``total`` with a status line; lets the UI (and Cancel) through."""
        self.progressBar.maximum = max(total, 1)
        self.progressBar.value = done
        self.statusLabel.text = text
        slicer.app.processEvents()  # keeps the UI alive and lets Cancel through

    def rate(self, done) -> float:
        """Items per second since the action started."""
        return done / max(time.perf_counter() - self._started, 1e-6)


#
# Widget
#


class SegmentationWidgetBase(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the module's .ui to its parameter node and calls the logic; no processing here.

    Subclasses set MODULE_NAME (also the .ui name: Resources/UI/<MODULE_NAME>.ui) and
    REQUIREMENTS_FILE, and define ``createLogic`` (an instance of a CardioSegLib.logic.SegmentationLogic
    subclass with the module's parameter node) and ``runSegmentation``. The .ui must have the
    widgets this class uses (see CatheterSeg.ui). Hooks: ``setupModule``, ``frameWords``,
    ``applyToolTip``, ``modelTasks``, ``modelTask``, ``prepareRun``, ``onSegmented``,
    ``exportTask``, ``updateChoiceLabels``, ``onCaseLoaded``.
    """

    MODULE_NAME = ""
    REQUIREMENTS_FILE = None
    DEVICE_LABELS = {"cpu": "CPU", "cuda": "GPU (CUDA)"}

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.segmentAction = LongAction(self.updateGUIFromParameterNode)  # Segment / Cancel
        self.exportAction = LongAction(self.updateGUIFromParameterNode)  # Export / Cancel export
        self._cudaAvailable = None  # unknown until the dependencies are there
        self.segmentEditorWidget = None
        self._redSliceNode = None
        self._browser = None  # browser of the video under review, followed like the red view
        self._alignedVolumeID = None  # volume whose frames the red view was last aligned to
        self._syncingFrame = False

    # --- to be defined or refined by the module ---

    def createLogic(self):
        raise NotImplementedError

    def runSegmentation(self, node, progress, cancel):
        """Call the logic's process() with the parameter node's values; returns (segmentation, stats)."""
        raise NotImplementedError

    def isBusy(self) -> bool:
        """Segmenting or exporting: no edits, no other long action."""
        return self.segmentAction.busy or self.exportAction.busy

    def setupModule(self) -> None:
        """Connect the module's own widgets (called in setup, before the parameter node is set)."""

    def frameWords(self) -> tuple:
        """(singular, plural) of what the input's slices are, for the texts: frames or slices."""
        return _("frame"), _("frames")

    def applyToolTip(self) -> str:
        return _("Segment every {frame} of the input volume").format(frame=self.frameWords()[0])

    def modelTasks(self) -> tuple:
        """Tasks whose models the model selector lists."""
        return (self.logic.taskName(),)

    def modelTask(self):
        """Task a loaded model file must be for (None: any of the module's tasks)."""
        return self.logic.TASK

    def prepareRun(self, node) -> bool:
        """Last checks before segmenting (dependencies are there); False stops, with the reason in
        the status label."""
        tasks = self.modelTasks()
        if not node.modelPath and len(tasks) == 1 and not self.logic.bundledModelPath(tasks[0]).is_file():
            self.ui.statusLabel.text = _("No bundled model for task {task}, load a model file.").format(task=tasks[0])
            return False
        return True

    def onSegmented(self, segmentation, stats) -> None:
        """After a successful run: the status line (and, in a subclass, measurements)."""
        frame, frames = self.frameWords()
        text = _("{n} {frames} in {seconds:.1f} s ({fps:.1f} {frames}/s)").format(
            n=stats["frames"], frames=frames, seconds=stats["seconds"], fps=stats["frames_per_second"])
        if stats.get("message"):  # e.g. nothing found: information, not an error
            text += "\n" + stats["message"]
        self.ui.statusLabel.text = text

    def exportTask(self):
        """Task the reviewed frames are exported for (None: the logic's default)."""
        return None

    def updateChoiceLabels(self) -> None:
        """Readable labels of the combo boxes that connectGui filled with parameter values."""
        self.updateDeviceChoices()

    def onCaseLoaded(self, volume, segmentation) -> None:
        """After "Load case" put a training folder case under review (e.g. choose its task)."""

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        return ensureDependencies(self.REQUIREMENTS_FILE, self.MODULE_NAME, askConfirmation)

    # --- set-up and life cycle ---

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.MODULE_NAME}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = self.createLogic()

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
        setFirstProperty(self.segmentEditorWidget, ("sourceVolumeNodeSelectorVisible",
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
        self.setupModule()

        self.segmentAction.bind(self.ui.progressBar, self.ui.statusLabel)
        self.exportAction.bind(self.ui.exportProgressBar, self.ui.exportStatusLabel)
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.segmentAction.requestCancel()
        self.exportAction.requestCancel()
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

    def onReload(self) -> None:
        """Developer mode "Reload": reload the shared parts too (the logic before the module logics
        that subclass it), then the module."""
        import importlib
        import sys

        from . import dependencies, moduleparts

        for name in ("CardioSegLib.logic", "CardioSegLib.catheterlogic", "CardioSegLib.heartlogic"):
            if name in sys.modules:
                importlib.reload(sys.modules[name])
        importlib.reload(dependencies)
        importlib.reload(moduleparts)
        super().onReload()

    def onSceneStartClose(self, caller, event) -> None:
        self.segmentAction.requestCancel()
        self.exportAction.requestCancel()
        if self.segmentEditorWidget is not None:
            self.segmentEditorWidget.setSegmentationNode(None)
            self.segmentEditorWidget.removeViewObservations()
        self._alignedVolumeID = None
        self.observeBrowser(None)
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

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with a "SlicerParameterName" property in the .ui are bound here.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateChoiceLabels()
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
        if self.segmentAction.busy:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop after the current batch of {frames}").format(
                frames=self.frameWords()[1])
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Segment")
            canApply = bool(node and node.inputVolume) and not self.exportAction.busy
            self.ui.applyButton.enabled = canApply
            self.ui.applyButton.toolTip = self.applyToolTip() if canApply else _("Select an input volume")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            widget.enabled = not self.isBusy()
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
        frame, frames = self.frameWords()
        editor = self.segmentEditorWidget
        if editor is not None:
            if editor.segmentationNode() != segmentation:
                editor.setSegmentationNode(segmentation)
            if editorSourceVolume(editor) != volume:
                setEditorSourceVolume(editor, volume)
        items, states = review_nodes(volume, segmentation)
        self.observeBrowser(browser_of_proxy(volume) if self.isSequence(items) else None)
        total = frame_count(items)
        slider = self.ui.frameSliderWidget
        wasBlocked = slider.blockSignals(True)
        slider.maximum = max(total - 1, 0)
        shown = shown_item(volume) if self.isSequence(items) else None
        if shown is not None:  # the frame the marks apply to is the one the browser shows
            slider.value = shown
        slider.blockSignals(wasBlocked)
        slider.enabled = total > 0
        self.ui.frameLabel.text = _("{Frame}:").format(Frame=frame.capitalize())
        self.ui.nextUnreviewedButton.text = _("Next unreviewed {frame}").format(frame=frame)
        busy = self.isBusy()
        canReview = bool(volume and segmentation) and not busy
        self.ui.segmentEditorFrame.enabled = not busy  # no edits while the labels are read or replaced
        self.ui.exportFolderPathLineEdit.enabled = not self.exportAction.busy
        for button in (self.ui.nextUnreviewedButton, self.ui.markReviewedButton, self.ui.excludeButton,
                       self.ui.unmarkButton):
            button.enabled = canReview
        if not (volume and segmentation):
            self.ui.frameStateLabel.text = ""
            self.ui.reviewCountLabel.text = (
                _("Select an input volume and its segmentation (run Segment) to review {frames}").format(
                    frames=frames) if total else "")
            reviewed = 0
        else:
            summary = self.logic.reviewSummary(states, items)
            reviewed = summary["reviewed"]
            state = review_states(states, items)[self.currentFrame()] if total else ""
            self.ui.frameStateLabel.text = {"reviewed": _("reviewed"), "excluded": _("excluded"),
                                            "unreviewed": _("not reviewed")}.get(state, "")
            text = _("{reviewed} of {total} {frames} reviewed").format(reviewed=reviewed, total=total, frames=frames)
            if summary["excluded"]:
                text += _(", {excluded} excluded").format(excluded=summary["excluded"])
            self.ui.reviewCountLabel.text = text
        if self.exportAction.busy:
            self.ui.exportButton.text = _("Cancel export")
            self.ui.exportButton.enabled = True
        else:
            self.ui.exportButton.text = _("Export reviewed {frames}").format(frames=frames)
            folder = self.ui.exportFolderPathLineEdit.currentPath
            self.ui.exportButton.enabled = bool(reviewed and folder) and not self.segmentAction.busy
            self.ui.exportButton.toolTip = (
                _("Write the {n} reviewed {frames} into {folder}").format(n=reviewed, frames=frames, folder=folder)
                if reviewed and folder else _("Choose a training folder") if reviewed
                else _("Mark the {frames} that are correct first").format(frames=frames))
        self.ui.loadCaseButton.enabled = bool(self.ui.exportFolderPathLineEdit.currentPath) and not busy

    def populateModels(self) -> None:
        """Bundled model first, then the installed models of the task(s)."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        tasks = self.modelTasks()
        if len(tasks) == 1:
            bundled = self.logic.bundledModelPath(tasks[0])
            combo.addItem(_("Bundled: {name}").format(name=bundled.name) if bundled.is_file()
                          else _("Bundled: none for {task} (load a model file)").format(task=tasks[0]), "")
        else:
            combo.addItem(_("Bundled model of the detected task"), "")
        listed = set()
        # reading a model's task needs torch: installed models show up once it is there
        for task in tasks if torchImportable() else ():
            for model in self.logic.userModels(userModelsDir(), task=task):
                if model.path in listed:  # broken files are listed for every task
                    continue
                listed.add(model.path)
                if model.broken:
                    logging.warning(f"{self.MODULE_NAME}: skipping {model.path}: {model.error}")
                else:
                    label = f"{model.path.name} (v{model.spec.version})"
                    combo.addItem(label if len(tasks) == 1 else f"{label}, {model.spec.task}", str(model.path))
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
            if not self.ensureDependencies(askConfirmation=True):
                return False
            if self._cudaAvailable is None:
                self._cudaAvailable = self.logic.cudaAvailable()
                self.updateDeviceChoices()
                self.populateModels()  # torch is there now: list the installed models
                self.updateGUIFromParameterNode()
        except Exception as e:
            logging.exception(f"{self.MODULE_NAME}: dependency installation failed")
            slicer.util.errorDisplay(_("Failed to install the Python packages {module} needs:\n{error}").format(
                module=self.MODULE_NAME, error=e))
            return False
        return True

    def onLoadModelButton(self, checked=False) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Load CardioSeg model file"), "",
            _("CardioSeg model (*.safetensors)"))
        if not path or not self.prepareDependencies():
            return
        try:
            stored = self.logic.storeUserModel(path, userModelsDir(), task=self.modelTask())  # checks it first
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
        action = self.segmentAction
        if action.busy:
            action.requestCancel(_("Cancelling..."))
            return
        node = self._parameterNode
        frame, frames = self.frameWords()
        if node.outputSegmentation and node.inputVolume:
            items, states = self.reviewSubject()
            marked = self.logic.reviewSummary(states, items)
            if (marked["reviewed"] or marked["excluded"]) and not slicer.util.confirmOkCancelDisplay(
                    _("'{name}' has {n} reviewed or excluded {frames}. Segmenting again replaces their labels "
                      "with the model's and clears the review marks. Export the reviewed {frames} first if you "
                      "want to keep them.\n\nSegment anyway?").format(
                        name=states.GetName(), n=marked["reviewed"] + marked["excluded"],
                        frames=frames),
                    _("{module} - Segment").format(module=self.MODULE_NAME)):
                return
        if not self.prepareDependencies() or not self.prepareRun(node):
            return
        frame, frames = self.frameWords()  # prepareRun may have found out what the input is

        def progress(done, total, *unused):
            action.show(done, total, _("{frame} {done}/{total}, {fps:.1f} {frames}/s").format(
                frame=frame, frames=frames, done=done, total=total, fps=action.rate(done)))

        with action.running(_("Loading model...")):
            try:
                segmentation, stats = self.runSegmentation(node, progress, action.cancelled)
            except Exception as e:
                if action.cancelRequested:
                    self.ui.statusLabel.text = _("Cancelled; the segmentation was not changed.")
                else:
                    self.ui.statusLabel.text = _("Failed.")
                    logging.exception(f"{self.MODULE_NAME} failed")
                    slicer.util.errorDisplay(_("Segmentation failed:\n{error}").format(error=e))
            else:
                shown = self.logic.shownSegmentation(segmentation)  # a sequence: its proxy, what the views show
                if self._parameterNode is not None and shown is not None and shown.IsA("vtkMRMLSegmentationNode"):
                    self._parameterNode.outputSegmentation = shown  # the next run reuses it
                self.onSegmented(segmentation, stats)

    # --- review ---

    def currentFrame(self) -> int:
        return int(round(self.ui.frameSliderWidget.value))

    def redSliceWidget(self):
        layoutManager = slicer.app.layoutManager()
        return layoutManager.sliceWidget("Red") if layoutManager is not None else None

    def replaceObserved(self, old, new, handler):
        """Move the ModifiedEvent observation ``handler`` from node ``old`` to ``new``; returns ``new``."""
        if new is not old:
            if old is not None:
                self.removeObserver(old, vtk.vtkCommand.ModifiedEvent, handler)
            if new is not None:
                self.addObserver(new, vtk.vtkCommand.ModifiedEvent, handler)
        return new

    def observeRedSliceNode(self) -> None:
        """Follow the red view: scrolling it through the frames moves the frame slider."""
        sliceWidget = self.redSliceWidget()
        sliceNode = sliceWidget.mrmlSliceNode() if sliceWidget is not None else None
        self._redSliceNode = self.replaceObserved(self._redSliceNode, sliceNode, self.onRedSliceModified)

    def observeBrowser(self, browser) -> None:
        """Follow the browser of a video under review: its toolbar (or playback) moves the frame slider."""
        self._browser = self.replaceObserved(self._browser, browser, self.onBrowserModified)

    def reviewSubject(self):
        """(frames, states node) for review and export: for a segmented video in a browser its
        sequence and segmentation sequence, else the input volume and the segmentation."""
        return review_nodes(*self.reviewNodes())

    @staticmethod
    def isSequence(frames) -> bool:
        return frames is not None and frames.IsA("vtkMRMLSequenceNode")

    def showFrame(self, frame: int) -> None:
        """Move the red slice view to frame ``frame`` of the input (aligning it to the frames the
        first time, or when the view was turned away from them)."""
        volume, segmentation = self.reviewNodes()
        frames, _states = review_nodes(volume, segmentation)
        sliceWidget = self.redSliceWidget()
        if volume is None or sliceWidget is None or frame >= frame_count(frames):
            return
        sliceNode = sliceWidget.mrmlSliceNode()
        self._syncingFrame = True
        try:
            if self.isSequence(frames):  # the browser shows the item in the proxy volume, its only slice
                show_item(volume, frame)
                frame = 0
            try:
                aligned = self.logic.sliceShowsFrames(sliceNode, volume)
                center = frame_center_ras(volume, frame)
            except ValueError as e:  # a non-linear transform on the volume
                self.ui.frameStateLabel.text = str(e)
                return
            if self._alignedVolumeID != volume.GetID() or not aligned:
                slicer.util.setSliceViewerLayers(background=volume)
                sliceNode.SetOrientation(frame_orientation(volume))
                sliceNode.RotateToVolumePlane(volume)
                sliceWidget.sliceLogic().FitSliceToAll()
                self._alignedVolumeID = volume.GetID()
            sliceNode.JumpSliceByOffsetting(*center)
        finally:
            self._syncingFrame = False

    def onRedSliceModified(self, caller=None, event=None) -> None:
        if self._syncingFrame or self.segmentAction.busy:
            return
        volume, segmentation = self.reviewNodes()
        if volume is None or self._alignedVolumeID != volume.GetID():
            return
        if self.isSequence(review_nodes(volume, segmentation)[0]):
            return  # the browser says which frame is shown (onBrowserModified)
        frame = self.logic.frameShownBySlice(caller, volume)
        if frame is None or frame == self.currentFrame():
            return
        slider = self.ui.frameSliderWidget
        wasBlocked = slider.blockSignals(True)
        slider.value = frame
        slider.blockSignals(wasBlocked)
        self.updateReviewGUI()

    def onBrowserModified(self, caller=None, event=None) -> None:
        if self._syncingFrame or self.segmentAction.busy:
            return
        volume, segmentation = self.reviewNodes()
        if not self.isSequence(review_nodes(volume, segmentation)[0]):
            return
        frame = shown_item(volume)
        if frame is not None:
            self.goToFrame(frame)  # the slider, the marks and the red view follow the browser

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
        frames, states = self.reviewSubject()
        if not (frames and states):
            return
        frame = next_unreviewed(states, frames, after=self.currentFrame())
        if frame is None:
            self.ui.exportStatusLabel.text = _("Every {frame} is reviewed or excluded.").format(
                frame=self.frameWords()[0])
            return
        self.goToFrame(frame)

    def onMarkButton(self, state: str) -> None:
        """Set the current frame's review state: only ever on the user's click."""
        frames, states = self.reviewSubject()
        if not (frames and states):
            return
        set_review_state(states, self.currentFrame(), state, frames)
        self.updateReviewGUI()

    # --- export ---

    def onExportFolderChanged(self, path) -> None:
        qt.QSettings().setValue(EXPORT_FOLDER_SETTING, path)  # remembered for the next session
        self.updateReviewGUI()

    def onExportButton(self, checked=False) -> None:
        frame, frames = self.frameWords()
        action = self.exportAction
        if action.busy:
            action.requestCancel(_("Cancelling after the current {frame}...").format(frame=frame))
            return
        volume, segmentation = self.reviewSubject()  # a video in a browser: its two sequences
        folder = self.ui.exportFolderPathLineEdit.currentPath
        if not (volume and segmentation and folder):
            return
        self.ui.exportFolderPathLineEdit.addCurrentPathToHistory()
        title = _("{module} - Export").format(module=self.MODULE_NAME)

        def progress(done, total, *unused):
            total = total or done  # None when the number of frames is not known in advance
            action.show(done, total, _("{frame} {done}/{total}").format(frame=frame, done=done, total=total))

        from Training.trainingfolder import CaseImageConflict, TrainingFolderError

        def export(replaceImages):
            return self.logic.exportReviewedFrames(
                segmentation, volume, folder, progress=progress, cancel=action.cancelled,
                task=self.exportTask(), replaceImages=replaceImages)

        with action.running(_("Exporting...")):
            try:
                try:
                    caseIds = export(False)
                except CaseImageConflict as conflict:  # another volume of this name was exported before
                    if action.cancelRequested or not slicer.util.confirmYesNoDisplay(
                            _("{error}\n\nReplace the stored images of such cases with the {frames} of '{volume}'? "
                              "Choose No to keep them; then rename '{volume}' and export again.").format(
                                error=conflict, frames=frames, volume=volume.GetName()), windowTitle=title):
                        raise
                    caseIds = export(True)
            except Exception as e:
                if action.cancelRequested:
                    self.ui.exportStatusLabel.text = _(
                        "Export cancelled. The training folder is valid; the {frames} not yet written are still "
                        "marked reviewed in the scene.").format(frames=frames)
                elif isinstance(e, CaseImageConflict):
                    self.ui.exportStatusLabel.text = _("Export stopped: {error}").format(error=e)
                elif isinstance(e, (TrainingFolderError, OSError)):
                    self.ui.exportStatusLabel.text = _("Export failed: {error}").format(error=e)
                    slicer.util.errorDisplay(
                        _("The reviewed {frames} could not be written to the training folder:\n{error}\n\n"
                          "Nothing was lost: the segmentation and its review marks are unchanged, and the cases "
                          "already in the folder are intact. Free some space or choose another folder, then "
                          "export again.").format(frames=frames, error=e), windowTitle=title)
                elif isinstance(e, ValueError):
                    self.ui.exportStatusLabel.text = _("Cannot export: {error}").format(error=e)
                    slicer.util.errorDisplay(_("Cannot export:\n{error}").format(error=e), windowTitle=title)
                else:
                    self.ui.exportStatusLabel.text = _("Export failed.")
                    logging.exception(f"{self.MODULE_NAME} export failed")
                    slicer.util.errorDisplay(_("Export failed:\n{error}\n\nThe segmentation and its review marks "
                                               "are unchanged.").format(error=e), windowTitle=title)
            else:
                self.ui.exportStatusLabel.text = _("Exported {n} {frames} to {folder}").format(
                    n=len(caseIds), frames=frames, folder=folder)

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
            logging.exception(f"{self.MODULE_NAME}: loading a case failed")
            slicer.util.errorDisplay(_("Cannot load case {case}:\n{error}").format(case=caseId, error=e))
            return
        if self._parameterNode is not None:
            self._parameterNode.inputVolume = volume
            self._parameterNode.outputSegmentation = segmentation
        self.onCaseLoaded(volume, segmentation)
        self.goToFrame(0)
        self.ui.exportStatusLabel.text = _("Loaded {case}. Export it again after fixing it to replace the case.").format(
            case=caseId)
