"""Segment (and Cancel) of the CardioSeg widgets: the checks before a run, the run with its
progress through the widget's ``segmentAction`` (longaction.LongAction), and the status line
after it.

A mixin of SegmentationWidgetBase (widgetbase.py); it uses the widget's ``ui``, ``logic``,
``_parameterNode``, ``segmentAction``, ``MODULE_NAME``, the hooks ``frameWords`` and
``modelTasks``, the model panel's ``prepareDependencies`` and the review panel's
``reviewSubject``.
"""
import logging

import slicer
from slicer.i18n import tr as _


class SegmentPanelMixin:
    """The Segment button; the hooks ``runSegmentation``, ``applyToolTip``, ``prepareRun`` and
    ``onSegmented``."""

    def runSegmentation(self, node, progress, cancel):
        """Call the logic's process() with the parameter node's values; returns (segmentation, stats)."""
        raise NotImplementedError

    def applyToolTip(self) -> str:
        return _("Segment every {frame} of the input volume").format(frame=self.frameWords()[0])

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
