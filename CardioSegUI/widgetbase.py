"""The widget base class of the CardioSeg modules.

A module subclasses it and sets a few class attributes (module name, requirements file); its
Logic comes from CardioSegLib (CardioSegLib.logic.SegmentationLogic and the module's subclass,
no Qt). The widget base has everything CatheterSeg and HeartSeg share, one panel per file:

- here: set-up and life cycle, the parameter node, and the state of the buttons;
- modelpanel.py: model selector and "Load model file...", device choices, dependencies;
- segmentpanel.py: Segment/Cancel with progress and status;
- reviewpanel.py: review panel (Segment Editor, frame slider following the red view, marks);
- exportpanel.py: export with progress/cancel, and loading a case back;
- longaction.py: the busy/progress/cancel helper of Segment and Export;
- editorhelpers.py: Segment Editor calls renamed across Slicer versions.

It only binds the .ui and calls the Logic and CardioSegLib.
"""
from pathlib import Path

import vtk

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .exportpanel import ExportPanelMixin
from .longaction import LongAction
from .modelpanel import ModelPanelMixin
from .reviewpanel import ReviewPanelMixin
from .segmentpanel import SegmentPanelMixin


class SegmentationWidgetBase(ModelPanelMixin, SegmentPanelMixin, ReviewPanelMixin, ExportPanelMixin,
                             ScriptedLoadableModuleWidget, VTKObservationMixin):
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

    # --- to be defined or refined by the module (more hooks in the panels' mixins) ---

    def createLogic(self):
        raise NotImplementedError

    def isBusy(self) -> bool:
        """Segmenting or exporting: no edits, no other long action."""
        return self.segmentAction.busy or self.exportAction.busy

    def setupModule(self) -> None:
        """Connect the module's own widgets (called in setup, before the parameter node is set)."""

    def frameWords(self) -> tuple:
        """(singular, plural) of what the input's slices are, for the texts: frames or slices."""
        return _("frame"), _("frames")

    def updateChoiceLabels(self) -> None:
        """Readable labels of the combo boxes that connectGui filled with parameter values."""
        self.updateDeviceChoices()

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

        self.setupReviewPanel()
        self.setupExportPanel()
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

        from . import (dependencies, editorhelpers, exportpanel, longaction, modelpanel, reviewpanel,
                       segmentpanel, widgetbase)

        for name in ("CardioSegLib.logic", "CardioSegLib.catheterlogic", "CardioSegLib.heartlogic"):
            if name in sys.modules:
                importlib.reload(sys.modules[name])
        for module in (dependencies, editorhelpers, longaction, modelpanel, segmentpanel, reviewpanel,
                       exportpanel, widgetbase):  # the base class last, made of the reloaded mixins
            importlib.reload(module)
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
