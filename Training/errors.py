"""Errors shared by every layer; no heavy imports, so Slicer-side code can catch them cheaply."""


class InputError(ValueError):
    """Input the task cannot use; the message names the problem."""


class Cancelled(RuntimeError):
    """The caller asked to stop."""
