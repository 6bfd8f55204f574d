"""Output locations, checked before the work starts, and a lock per working folder.

The command line checks every file and folder it will write before it reads or computes
anything, so that a long run never ends in a crash at the write, and never writes over one of
its own inputs. Errors are ``InputError`` with one line naming the option and the reason.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import CardioSegError, InputError

LOCK_NAME = ".cardioseg.lock"


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same path after links, or the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == root or root in real.parents


def _probe(folder: Path, what: str) -> None:
    """Create and delete a hidden file in ``folder``: the one test of writability that holds for
    root, read-only file systems and ACLs alike."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cardioseg-probe-"):
            pass
    except OSError as e:
        raise InputError(f"{what} {folder}: cannot write in it: {e.strerror or e}") from None


def output_file(path, what: str, inputs=(), input_folders=()) -> Path:
    """Check that ``path`` can be written as the file ``what`` (an option name, e.g. "--out"):
    not a folder, not one of ``inputs`` (files, links to them included), not inside one of
    ``input_folders`` (a folder being read), and its folder exists (missing parents are created)
    and is writable. Returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    for inp in inputs:
        if inp is not None and Path(inp).exists() and _same_file(path, Path(inp)):
            raise InputError(f"{what} {path} is the input {inp}; it would be overwritten: choose another name")
    for folder in input_folders:
        if folder is not None and Path(folder).is_dir() and _inside(path, Path(folder)):
            raise InputError(f"{what} {path} is inside {folder}, the folder being read; write it elsewhere")
    output_folder(path.parent, f"{what} {path}: the folder")
    return path


def output_folder(path, what: str) -> Path:
    """Check that the folder ``path`` exists (created if missing) and is writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what} {path}: cannot create it: {e.strerror or e}") from None
    _probe(path, what)
    return path


@contextlib.contextmanager
def folder_lock(folder: Path, busy: str, error=CardioSegError):
    """Hold ``folder/.cardioseg.lock`` for the block; ``error(busy)`` if another process holds
    it. The OS releases the lock when the process ends, kill -9 included."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise error(f"cannot lock {folder}: {e.strerror or e}") from None
    try:
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise error(busy) from None
        yield
    finally:
        if os.name == "nt":
            with contextlib.suppress(OSError):
                import msvcrt

                os.lseek(fd, 0, 0)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)
