"""Review of the CardioSeg widgets: the Segment Editor on the output segmentation, the frame
slider that follows the red view (or the browser of a video under review), and the review marks
of each frame (reviewed, excluded, not reviewed).

A mixin of SegmentationWidgetBase (widgetbase.py); it uses the widget's ``ui``, ``logic``,
``_parameterNode``, ``segmentEditorWidget``, ``_redSliceNode``, ``_browser``,
``_alignedVolumeID``, ``_syncingFrame``, ``segmentAction``, the hooks ``frameWords`` and
``isBusy``, and the export panel's ``updateExportGUI``.
"""
import vtk

import slicer
from slicer.i18n import tr as _

from CardioSegLib.geometry import frame_center_ras, frame_count, frame_orientation
from CardioSegLib.reviewstates import next_to_review, review_states, set_review_state, uncertainties
from CardioSegLib.sequencebrowser import browser_of_proxy, review_nodes, show_item, shown_item

from .editorhelpers import editorSourceVolume, setEditorSourceVolume, setFirstProperty


class ReviewPanelMixin:
    """Frames, marks and the Segment Editor of the "Review and export" panel."""

    def setupReviewPanel(self) -> None:
        """Segment Editor on the output segmentation, frame slider, marks (called in setup)."""
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
            text = {"reviewed": _("reviewed"), "excluded": _("excluded"),
                    "unreviewed": _("not reviewed")}.get(state, "")
            uncertainty = uncertainties(states, items)[self.currentFrame()] if total else None
            if uncertainty is not None:
                text += _(" (model uncertainty {value:.2f})").format(value=uncertainty)
            self.ui.frameStateLabel.text = text
            text = _("{reviewed} of {total} {frames} reviewed").format(reviewed=reviewed, total=total, frames=frames)
            if summary["excluded"]:
                text += _(", {excluded} excluded").format(excluded=summary["excluded"])
            self.ui.reviewCountLabel.text = text
        self.updateExportGUI(reviewed, frames)

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
        order = "uncertainty" if self.ui.leastCertainFirstCheckBox.checked else "sequential"
        frame = next_to_review(states, frames, after=self.currentFrame(), order=order)
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
