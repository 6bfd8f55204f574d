"""Segment Editor helpers of the CardioSeg widgets: properties and calls that were renamed across
Slicer versions (``sourceVolumeNode`` was ``masterVolumeNode`` before Slicer 5.4)."""


def setFirstProperty(widget, names, value) -> None:
    """Set the first of ``names`` the widget has (properties renamed across Slicer versions)."""
    for name in names:
        if hasattr(widget, name):
            setattr(widget, name, value)
            return


def editorSourceVolume(editor):
    getter = getattr(editor, "sourceVolumeNode", None) or editor.masterVolumeNode  # Slicer < 5.4
    return getter()


def setEditorSourceVolume(editor, volume) -> None:
    setter = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # Slicer < 5.4
    setter(volume)
