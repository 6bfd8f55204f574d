"""Model and device choice of the CardioSeg widgets: the model selector (bundled model, then the
user models of the module's tasks), "Load model file...", the device choices, and installing
the dependencies (after asking) before the first model is read or run.

A mixin of SegmentationWidgetBase (widgetbase.py); it uses the widget's ``ui``, ``logic``,
``_parameterNode``, ``_cudaAvailable``, ``MODULE_NAME`` and ``REQUIREMENTS_FILE``.
"""
import logging

import qt

import slicer
from slicer.i18n import tr as _

from .dependencies import ensureDependencies, torchImportable, userModelsDir


class ModelPanelMixin:
    """Which model runs, on which device; the hooks ``modelTasks`` and ``modelTask``."""

    DEVICE_LABELS = {"cpu": "CPU", "cuda": "GPU (CUDA)"}

    def modelTasks(self) -> tuple:
        """Tasks whose models the model selector lists."""
        return (self.logic.taskName(),)

    def modelTask(self):
        """Task a loaded model file must be for (None: any of the module's tasks)."""
        return self.logic.TASK

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        return ensureDependencies(self.REQUIREMENTS_FILE, self.MODULE_NAME, askConfirmation)

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
