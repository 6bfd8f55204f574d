"""Export of the CardioSeg widgets: the training folder (remembered in the settings), "Export
reviewed frames" with its progress through the widget's ``exportAction``
(longaction.LongAction), and "Load case" to put an exported case back under review.

A mixin of SegmentationWidgetBase (widgetbase.py); it uses the widget's ``ui``, ``logic``,
``_parameterNode``, ``exportAction``, ``segmentAction``, ``MODULE_NAME``, the hooks
``frameWords`` and ``isBusy``, and the review panel's ``reviewSubject``, ``updateReviewGUI``
and ``goToFrame``.
"""
import logging
import time

import qt

import slicer
from slicer.i18n import tr as _

# QSettings key of the training folder that "Export reviewed frames" writes to (shared by the
# CardioSeg modules, so the user chooses it once).
EXPORT_FOLDER_SETTING = "CardioSeg/ExportFolder"


class ExportPanelMixin:
    """The training folder, Export and Load case; the hooks ``exportTask`` and ``onCaseLoaded``."""

    def exportTask(self):
        """Task the reviewed frames are exported for (None: the logic's default)."""
        return None

    def onCaseLoaded(self, volume, segmentation) -> None:
        """After "Load case" put a training folder case under review (e.g. choose its task)."""

    def setupExportPanel(self) -> None:
        """Training folder, Export and Load case (called in setup)."""
        self.ui.exportFolderPathLineEdit.currentPath = qt.QSettings().value(EXPORT_FOLDER_SETTING, "") or ""
        self.ui.exportFolderPathLineEdit.connect("currentPathChanged(QString)", self.onExportFolderChanged)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCaseButton)
        self.ui.adaptButton.connect("clicked(bool)", self.onAdaptButton)
        self._adapting = False  # the export panel's progress bar and Cancel serve Adapt while it runs

    def updateExportGUI(self, reviewed: int, frames: str) -> None:
        """Export button (``reviewed`` frames to write; ``frames``: the word), folder and Load case."""
        self.ui.exportFolderPathLineEdit.enabled = not self.exportAction.busy
        if self.exportAction.busy and self._adapting:
            self.ui.exportButton.enabled = False
        elif self.exportAction.busy:
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
        self.ui.loadCaseButton.enabled = bool(self.ui.exportFolderPathLineEdit.currentPath) and not self.isBusy()
        adapting = self.exportAction.busy and self._adapting
        self.ui.adaptButton.text = _("Cancel adapting") if adapting else _("Adapt to reviewed {frames}").format(frames=frames)
        self.ui.adaptButton.enabled = adapting or (bool(reviewed) and not self.isBusy())

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

    def onAdaptButton(self, checked=False) -> None:
        """Fine-tune on the reviewed frames in a background process (progress, Cancel), install the
        model and re-segment the frames not reviewed (CardioSegLib.adapt)."""
        frame, frames = self.frameWords()
        action = self.exportAction
        if action.busy:
            action.requestCancel(_("Cancelling the fine-tune..."))
            return
        volume, segmentation = self.reviewNodes()
        if not (volume and segmentation):
            return
        title = _("{module} - Adapt").format(module=self.MODULE_NAME)
        modelPath = self._parameterNode.modelPath if self._parameterNode is not None else ""
        try:
            job = self.logic.startAdaptation(segmentation, volume, task=self.exportTask(), modelPath=modelPath or None)
        except (ValueError, OSError) as e:
            slicer.util.errorDisplay(_("Cannot adapt:\n{error}").format(error=e), windowTitle=title)
            return
        self._adapting = True
        try:
            with action.running(_("Fine-tuning on the reviewed {frames}...").format(frames=frames)):
                while True:  # the training runs in its own process; show() lets Slicer (and Cancel) through
                    done, total, finished = job.poll()
                    action.show(done, total, _("Fine-tuning: epoch {done}/{total}").format(done=done, total=total))
                    if action.cancelRequested:
                        job.cancel()
                        self.ui.exportStatusLabel.text = _("Adapting cancelled; nothing changed.")
                        return
                    if finished:
                        break
                    time.sleep(0.2)
                if not job.succeeded:
                    self.ui.exportStatusLabel.text = _("Adapting failed: {error}").format(error=job.error)
                    slicer.util.errorDisplay(_("The fine-tune failed:\n{error}\n\nNothing changed; its log is "
                                               "{log}").format(error=job.error, log=job.log), windowTitle=title)
                    return

                def progress(done, total, *unused):
                    action.show(done, total, _("Re-segmenting {frame} {done}/{total}").format(
                        frame=frame, done=done, total=total))

                installed, stats = self.logic.finishAdaptation(job, segmentation, volume, progress=progress,
                                                               cancel=action.cancelled)
        except Exception as e:
            logging.exception(f"{self.MODULE_NAME}: adapting failed")
            self.ui.exportStatusLabel.text = _("Adapting failed: {error}").format(error=e)
            return
        finally:
            self._adapting = False
            self.updateReviewGUI()
        self.populateModels()
        self.ui.exportStatusLabel.text = _("Adapted: {model} installed; {n} {frames} re-segmented, {r} kept.").format(
            model=installed.name, n=stats["frames"], frames=frames, r=stats["reviewed"])

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
