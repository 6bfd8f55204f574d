"""Cancelling long work: the one helper that every loop which can be cancelled calls.

``cancel`` is None (never cancelled), an object with ``is_set()`` (``threading.Event``,
``multiprocessing.Event``) or a callable that returns true once the work should stop.
"""
from __future__ import annotations

from typing import Callable

from .errors import Cancelled


def is_cancelled(cancel) -> bool:
    """True if ``cancel`` (None, an Event-like object or a callable) says stop."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())


def raise_if_cancelled(cancel, message: str | Callable[[], str]) -> None:
    """Raise ``Cancelled(message)`` if ``cancel`` says stop; ``message`` may be a callable, made only then."""
    if is_cancelled(cancel):
        raise Cancelled(message() if callable(message) else message)
