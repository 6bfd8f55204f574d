"""Errors shared by every layer; no heavy imports, so Slicer-side code can catch them cheaply.

``CardioSegError`` is the base of every error that a user's input, files or settings cause; its
message is one line for the user. The command line prints those and nothing else: any other
exception is a bug, shown with its traceback.
"""


class CardioSegError(ValueError):
    """Something the user gave (input, file, folder, option) cannot be used; the message says why."""


class InputError(CardioSegError):
    """Input the task cannot use; the message names the problem."""


class Cancelled(RuntimeError):
    """The caller asked to stop."""
