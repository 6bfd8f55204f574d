"""The user models folder: retrained model files installed next to (never over) the bundled ones.

The one definition of that folder, used by the command line and the Slicer module. No torch at
import time; listing reads only the specs, installing loads each file once to check it.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import CardioSegError

ENV_VAR = "CARDIOSEG_MODELS_DIR"
SUFFIX = ".safetensors"


class ModelsFolderError(CardioSegError):
    """The user models folder cannot be used: not a folder, not writable, or in the bundled one."""


def user_models_dir() -> Path:
    """$CARDIOSEG_MODELS_DIR, else the per-user data folder of the platform (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else home / ".local" / "share"
    return base / "cardioseg" / "models"


@dataclass
class InstalledModel:
    """A file in the user models folder: its spec, or the error that makes it unusable."""

    path: Path
    spec: object = None  # Training.modelfile.ModelSpec
    error: str = ""

    @property
    def broken(self) -> bool:
        return self.spec is None


def list_models(task: str | None = None, folder=None) -> list:
    """InstalledModel of each model file in the folder, newest first; with ``task``, only models
    for that task (broken files are always listed). Raises InputError for an unknown task."""
    if task is not None:
        from .tasks import get_task

        get_task(task)  # an unknown task is an error naming the known ones, not an empty filter
    folder = Path(folder) if folder else user_models_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*" + SUFFIX), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            from .modelfile import read_spec

            entry = InstalledModel(path, read_spec(path))
        except Exception as e:  # one bad file (or missing packages) never stops the listing
            entry = InstalledModel(path, error=str(e) or type(e).__name__)
        if entry.broken or task in (None, entry.spec.task):
            out.append(entry)
    return out


def check_model(path, task: str | None = None):
    """Spec of a model file that loads (spec schema, checksum, architecture) and is for ``task``
    (or, without one, for the known task its spec names): that task's classes and input channels.
    Raises ModelFileError naming the problem."""
    from .modelfile import load_model

    _model, spec = load_model(path, task=task)  # load_model runs every check, see modelfile.check_task
    return spec


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed; ModelsFolderError unless this process can write in it."""
    from .errors import InputError
    from .outputfiles import output_folder

    try:
        output_folder(folder, "the user models folder")
    except InputError as e:
        raise ModelsFolderError(f"{e} (set {ENV_VAR} to another folder)") from None


def install_model(path, task: str | None = None, folder=None) -> Path:
    """Check a model file and copy it into the user models folder under its own name.

    A different file already there with that name is kept and the copy is named ``NAME-2``,
    ``NAME-3``...; the same bytes installed again return the existing file. Never writes into a
    bundled models folder. Returns the installed path.
    """
    src = Path(path)
    folder = Path(folder).expanduser() if folder else user_models_dir()
    resolved = folder.resolve()
    from .tasks import bundled_model_dirs

    for bundled in bundled_model_dirs():
        if resolved == bundled or bundled in resolved.parents:
            raise ModelsFolderError(f"the user models folder {folder} is in the bundled models folder; "
                                    f"bundled models are never replaced (set {ENV_VAR} to another folder)")
    if src.suffix != SUFFIX:
        from .modelfile import ModelFileError

        raise ModelFileError(f"{src.name}: a CardioSeg model file ends with {SUFFIX}")
    check_model(src, task)
    _writable_folder(folder)
    dest, n = folder / src.name, 1
    while dest.exists():
        if dest.resolve() == src.resolve() or filecmp.cmp(dest, src, shallow=False):
            return dest
        n += 1
        dest = folder / f"{src.stem}-{n}{SUFFIX}"
    tmp = folder / f".{dest.name}.{os.getpid()}.tmp"  # not listed: it does not end with .safetensors
    try:
        with open(src, "rb") as inp, open(tmp, "wb") as out:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):  # e.g. a full disk, or a read-only file system
            raise ModelsFolderError(f"cannot copy {src.name} into the user models folder {folder}: "
                                    f"{e.strerror or e}") from None
        raise
    return dest


def resolve_model(name) -> Path:
    """``name`` as a path if it exists; else a bare file name (with or without .safetensors)
    of an installed model. Raises ModelFileError if it is neither."""
    path = Path(name)
    if path.exists() or path.name != str(name):
        return path
    folder = user_models_dir()
    for candidate in (folder / path.name, folder / (path.name + SUFFIX)):
        if candidate.is_file():
            return candidate
    from .modelfile import ModelFileError

    raise ModelFileError(f"model file not found: {name} is neither a file nor an installed model in {folder} "
                         "(see cardioseg models)")
