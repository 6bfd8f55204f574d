"""Python packages a CardioSeg module needs: torch through the PyTorch extension, the rest from a
requirements file, installed only after asking and never at import time."""
import importlib.util
from pathlib import Path

import slicer
from slicer.i18n import tr as _

# Provided by the PyTorch extension (or by Slicer itself); never pulled in by pip here.
PROVIDED_PACKAGES = ["torch", "torchvision", "SimpleITK"]


def torchImportable() -> bool:
    return importlib.util.find_spec("torch") is not None


def ensureTorch(requester: str, askConfirmation: bool) -> bool:
    """Install PyTorch through the PyTorch extension (PyTorchUtils); False if not done."""
    if torchImportable():
        return True
    try:
        import PyTorchUtils
    except ImportError:
        # No PyTorch extension: offer the plain PyPI wheel as a fallback.
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("{module} needs PyTorch. The recommended way is to install the 'PyTorch' extension "
              "from the Extensions Manager, which picks the build that matches your GPU.\n\n"
              "Click OK to install the default PyTorch from PyPI now instead (large download).").format(
                module=requester),
            _("{module} - Install PyTorch").format(module=requester),
        ):
            return False
        slicer.util.pip_install(["torch", "torchvision"])
        return torchImportable()
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if torchLogic.torchInstalled():
        return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        _("{module} runs its model with PyTorch, which is not installed yet. Install it now with the "
          "PyTorch extension? This needs a network connection and may take minutes.").format(module=requester),
        _("{module} - Install PyTorch").format(module=requester),
    ):
        return False
    return torchLogic.installTorch(askConfirmation=askConfirmation) is not None


def missingRequirements(requirementsFile: Path) -> list:
    """Requirement strings of a requirements file that are not installed (fallback for old Slicer)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for line in Path(requirementsFile).read_text().splitlines():
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


def ensureDependencies(requirementsFile: Path, requester: str, askConfirmation: bool = True) -> bool:
    """Make torch and the packages of ``requirementsFile`` importable.

    Asks before installing anything (unless askConfirmation is False, as in the self-tests).
    Returns False if the user declined.
    """
    if not ensureTorch(requester, askConfirmation):
        return False
    try:
        import slicer.pydeps as pydeps  # Slicer >= 5.11
    except ImportError:
        pydeps = None
    if pydeps is not None:
        import inspect

        options = {"requester": requester, "prompt_install": askConfirmation}
        accepted = inspect.signature(pydeps.pip_ensure).parameters
        if "skip_packages" in accepted:
            options["skip_packages"] = PROVIDED_PACKAGES
        if "skip_in_testing" in accepted:
            options["skip_in_testing"] = False  # the self-tests need the real packages
        try:
            pydeps.pip_ensure(pydeps.load_requirements(requirementsFile), **options)
        except RuntimeError:  # raised when the user declines
            return False
        return True
    # Older Slicer: check, ask, pip_install.
    missing = missingRequirements(requirementsFile)
    if not missing:
        return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        _("{module} needs these Python packages:\n\n{packages}\n\nInstall them now?").format(
            module=requester, packages="\n".join(missing)),
        _("{module} - Install Python packages").format(module=requester),
    ):
        return False
    slicer.util.pip_install(missing)
    return True


def userModelsDir() -> Path:
    """The user models folder, shared with `cardioseg install-model` (Training.usermodels)."""
    from Training.usermodels import user_models_dir

    return user_models_dir()
