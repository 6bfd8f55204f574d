"""The one busy / progress / cancel helper of the CardioSeg widgets: a long action of the panel
(Segment, Export) with its progress bar, status label and Cancel."""
import contextlib
import time

import slicer


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
