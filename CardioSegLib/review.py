"""Per-frame review state of a segmentation, stored in the scene, and frame navigation.

Every frame (slice k of the input volume, see ``scene``) is UNREVIEWED, REVIEWED or EXCLUDED.
The states are a node attribute of the segmentation node, ``"CardioSeg.ReviewStates"``: one
character per frame (``-`` unreviewed, ``R`` reviewed, ``X`` excluded), e.g. ``"-R-X"``. Node
attributes are written into the ``.mrml`` file, so the states survive saving and reloading the
scene (and Slicer's undo/redo of node modifications). A missing attribute, or one shorter than
the run, means "unreviewed" for the frames it does not cover.

Frames are identified by position, not only by index: reading a saved volume can reorder its
slices (Slicer's archetype reader reverses the K axis of a left-handed grid), so, when the
functions are given the volume node instead of a frame count, a second attribute,
``"CardioSeg.ReviewGeometry"``, records where frame 0 was and the step between frames (in the
volume's own IJK-to-RAS, so a parent transform moves nothing), and the states are mapped onto
the frames at those positions. Pass the volume whenever you have it.

For a sequence input (a video as a vtkMRMLSequenceNode or browser), frame k is item k: the states
are stored the same way on the segmentation *sequence* node, in item order, without geometry.

Nothing here marks a frame automatically: a state only changes when ``set_review_state`` or
``clear_review_states`` is called, i.e. when the user asks. Editing a frame changes nothing.

MRML only (no Qt, no ``slicer.app``/``slicer.modules``) and no torch: the module calls this on
every slider move and button click, before any model was loaded.
"""
from __future__ import annotations

import numpy as np
import vtk

UNREVIEWED = "unreviewed"
REVIEWED = "reviewed"
EXCLUDED = "excluded"
STATES = (UNREVIEWED, REVIEWED, EXCLUDED)

ATTRIBUTE = "CardioSeg.ReviewStates"
GEOMETRY_ATTRIBUTE = "CardioSeg.ReviewGeometry"
_CODE = {UNREVIEWED: "-", REVIEWED: "R", EXCLUDED: "X"}
_STATE = {c: s for s, c in _CODE.items()}


def _check_state(state: str) -> str:
    if state not in _CODE:
        raise ValueError(f"unknown review state {state!r}; expected one of {', '.join(STATES)}")
    return state


def _codes(node) -> str:
    return node.GetAttribute(ATTRIBUTE) or ""


def _is_count(frames) -> bool:
    return isinstance(frames, (int, np.integer))


def is_sequence(node) -> bool:
    """A sequence or sequence browser node: its frames are items, identified by item number."""
    return node is not None and (node.IsA("vtkMRMLSequenceNode") or node.IsA("vtkMRMLSequenceBrowserNode"))


def primary_sequence(browser, purpose: str | None = None):
    """A sequence browser's primary ("master" in older Slicer) sequence node, or None; with a
    ``purpose`` (e.g. "segment"), a browser without one raises InputError (a ValueError) saying
    it has no sequence to do that to."""
    get = getattr(browser, "GetPrimarySequenceNode", None) or browser.GetMasterSequenceNode
    sequence = get()
    if sequence is None and purpose:
        from Training.errors import InputError

        raise InputError(f"sequence browser '{browser.GetName()}' has no sequence to {purpose}")
    return sequence


def browser_of_proxy(node):
    """The sequence browser for which ``node`` is the proxy node: the node in which the browser
    shows the current item of one of its sequences (e.g. the volume on screen while a video is
    browsed). None when no browser in the node's scene has it as a proxy. When several browsers
    do, one whose primary sequence ``node`` shows is preferred."""
    scene = node.GetScene() if node is not None else None
    if scene is None or not node.GetID():
        return None
    found = None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        sequence = browser.GetSequenceNode(node)
        if sequence is None:
            continue
        primary = primary_sequence(browser)
        if primary is not None and primary.GetID() == sequence.GetID():
            return browser
        found = found or browser
    return found


def segmentation_input(volume_node):
    """What Segment runs on when the user chooses ``volume_node``: (node, browser).

    A browser's proxy volume shows one frame of a video, so the whole video is segmented:
    (the sequence the proxy shows, the browser), the result to be synchronized to that browser.
    That sequence is the browser's primary one, or another one it plays along. Any other volume:
    (volume_node, None)."""
    browser = browser_of_proxy(volume_node)
    if browser is None:
        return volume_node, None
    return browser.GetSequenceNode(volume_node), browser


def review_nodes(volume, segmentation):
    """(frames, states node) for the review functions and the export, from the nodes the user
    works on (the input volume and the segmentation shown with it).

    A segmented video in a browser (its proxy volume, and the proxy segmentation of a
    segmentation sequence of the same browser) is reviewed item by item: (the volume's
    sequence, the segmentation's sequence). Otherwise: (volume, segmentation)."""
    browser = browser_of_proxy(volume)
    segmentations = browser.GetSequenceNode(segmentation) if browser and segmentation is not None else None
    if segmentations is None:
        return volume, segmentation
    return browser.GetSequenceNode(volume), segmentations


def proxy_node(sequence):
    """The node in which a browser shows the current item of ``sequence`` (its proxy node), or
    None when no browser plays ``sequence``."""
    scene = sequence.GetScene() if sequence is not None else None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode") if scene else 0):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if browser.IsSynchronizedSequenceNode(sequence, True):
            return browser.GetProxyNode(sequence)
    return None


def segmentation_target(segmentation, browser):
    """The segmentation a run may overwrite, given the run's browser (``segmentation_input``).
    A browser's proxy segmentation is one frame of a segmentation sequence: a sequence run
    overwrites that sequence, but a volume run (no browser) must not write into it, so it gets
    None (a new segmentation is made). Otherwise ``segmentation``."""
    if browser is None and browser_of_proxy(segmentation) is not None:
        return None
    return segmentation


def show_item(proxy, item: int) -> bool:
    """Make the browser of ``proxy`` (``browser_of_proxy``) show item ``item`` of the sequence
    that ``proxy`` shows: it selects the primary sequence's item at that index value (or the
    nearest before it). False when ``proxy`` is no browser's proxy."""
    browser = browser_of_proxy(proxy)
    if browser is None:
        return False
    sequence = browser.GetSequenceNode(proxy)
    return bool(browser.SetSelectedItemByIndexValue(sequence.GetNthIndexValue(int(item)), False))


def shown_item(proxy):
    """The item of its sequence that ``proxy`` shows now (the item at, or else just before, the
    browser's selected index value), or None (not a proxy, nothing selected)."""
    browser = browser_of_proxy(proxy)
    primary = primary_sequence(browser) if browser is not None else None
    selected = browser.GetSelectedItemNumber() if browser is not None else -1
    if primary is None or not 0 <= selected < primary.GetNumberOfDataNodes():
        return None
    sequence = browser.GetSequenceNode(proxy)
    item = sequence.GetItemNumberFromIndexValue(primary.GetNthIndexValue(selected), False)
    return item if 0 <= item < sequence.GetNumberOfDataNodes() else None


def describe_input(volume_node) -> str:
    """One line for the panel when ``volume_node`` stands for a whole video (a browser's proxy
    volume): "sequence 'X' (N frames): every frame is segmented"; "" otherwise."""
    sequence, browser = segmentation_input(volume_node)
    if browser is None:
        return ""
    n = sequence.GetNumberOfDataNodes()
    return (f"sequence '{sequence.GetName()}' ({n} frame{'s' if n != 1 else ''}): every frame is segmented, "
            "into a segmentation sequence that the browser shows with it")


def _by_number(frames) -> bool:
    """Frames identified by position in a list, not by where they lie: a count or a sequence."""
    return _is_count(frames) or is_sequence(frames)


def _anchor(volume) -> np.ndarray:
    """Frame 0's first voxel and the step from frame to frame, in the volume's own RAS (6 values)."""
    m = _local_ijk_to_ras(volume)
    return np.concatenate([m[:3, 3], m[:3, 2]])


def _mapped_codes(node, frames) -> str:
    """The stored codes as a string over the frames of ``frames`` (a count or a volume node)."""
    codes = _codes(node)
    if _by_number(frames):
        n = int(frames) if _is_count(frames) else frame_count(frames)
        return codes[:n].ljust(n, _CODE[UNREVIEWED])
    volume = frames
    n = frame_count(volume)
    stored = node.GetAttribute(GEOMETRY_ATTRIBUTE)
    if not stored or not codes:
        return codes[:n].ljust(n, _CODE[UNREVIEWED])
    try:
        anchor = np.array([float(x) for x in stored.split()])
        if anchor.shape != (6,):
            raise ValueError
    except ValueError:
        anchor = _anchor(volume)  # unreadable: take the states as they are
    here = _anchor(volume)
    if np.allclose(anchor, here, rtol=0, atol=1e-6):
        return codes[:n].ljust(n, _CODE[UNREVIEWED])
    # where each stored frame lies now: solve the current grid for frame i's position
    inverse = np.linalg.inv(_local_ijk_to_ras(volume))
    out = [_CODE[UNREVIEWED]] * n
    for i, c in enumerate(codes):
        point = np.append(anchor[:3] + i * anchor[3:], 1.0)
        k = (inverse @ point)[2]
        j = int(np.floor(k + 0.5))
        if abs(k - j) < 1e-3 and 0 <= j < n:
            out[j] = c
    return "".join(out)


def review_states(node, frames) -> list[str]:
    """The state of each frame of ``node`` (a segmentation node).

    ``frames``: the volume node the frames belong to (recommended: states follow the frames'
    positions), a sequence (or browser) node whose items are the frames (the states are then
    stored on the segmentation sequence, one per item, in item order), or just their number.
    Frames the attribute does not cover, and characters it does not know (a hand-edited scene),
    read as UNREVIEWED, so nothing is ever exported that the user did not mark.
    """
    return [_STATE.get(c, UNREVIEWED) for c in _mapped_codes(node, frames)]


def set_review_state(node, frame: int, state: str, frames=None) -> None:
    """Set one frame's state.

    ``frames``: the volume node (the states are then stored in its current frame order, with
    its geometry), a sequence or browser node (item order), or a frame count that ``frame`` is
    checked against, or None (index only).
    Other frames keep their states. Setting a frame to the state it already has does not modify
    the node.
    """
    _check_state(state)
    frame = int(frame)
    n = None if frames is None else (int(frames) if _is_count(frames) else frame_count(frames))
    if frame < 0 or (n is not None and frame >= n):
        limit = f" of {n} frames" if n is not None else ""
        raise IndexError(f"frame {frame} is out of range{limit}")
    volume = None if frames is None or _by_number(frames) else frames
    codes = _mapped_codes(node, volume) if volume is not None else _codes(node)
    codes = codes.ljust(frame + 1, _CODE[UNREVIEWED])
    new = codes[:frame] + _CODE[state] + codes[frame + 1:]
    anchor = " ".join(f"{x:.17g}" for x in _anchor(volume)) if volume is not None else None
    if new == _codes(node) and (anchor is None or anchor == node.GetAttribute(GEOMETRY_ATTRIBUTE)):
        return
    node.SetAttribute(ATTRIBUTE, new)
    if anchor is not None:
        node.SetAttribute(GEOMETRY_ATTRIBUTE, anchor)


def clear_review_states(node) -> None:
    """Every frame back to UNREVIEWED (e.g. when a new model run replaces the labels)."""
    for name in (ATTRIBUTE, GEOMETRY_ATTRIBUTE):
        if node.GetAttribute(name) is not None:
            node.RemoveAttribute(name)


def count(node, frames, state: str = REVIEWED) -> int:
    """Number of frames in ``state``; ``frames`` as for ``review_states``."""
    _check_state(state)
    return review_states(node, frames).count(state)


def frames_in_state(node, frames, state: str = REVIEWED) -> list[int]:
    """Indices of the frames in ``state``, ascending; ``frames`` as for ``review_states``."""
    _check_state(state)
    return [k for k, s in enumerate(review_states(node, frames)) if s == state]


def next_unreviewed(node, frames, after: int = -1) -> int | None:
    """The first UNREVIEWED frame after frame ``after``, wrapping around to the start; None when
    every frame is reviewed or excluded. ``after=-1`` searches from frame 0; the frame ``after``
    itself is checked last, so the current frame is returned only if it is the only one left.
    ``frames`` as for ``review_states``."""
    states = review_states(node, frames)
    n = len(states)
    if n == 0:
        return None
    start = (int(after) + 1) % n
    for i in range(n):
        k = (start + i) % n
        if states[k] == UNREVIEWED:
            return k
    return None


# --- frames of a volume and where they are ---


def frame_count(volume) -> int:
    """Number of frames of a volume node (slices, K; a vector volume's components do not count),
    or of a sequence node (items) or sequence browser (its primary sequence's items); 0 without
    image data or items."""
    if volume is not None and volume.IsA("vtkMRMLSequenceBrowserNode"):
        volume = primary_sequence(volume)
        return int(volume.GetNumberOfDataNodes()) if volume is not None else 0
    if volume is not None and volume.IsA("vtkMRMLSequenceNode"):
        return int(volume.GetNumberOfDataNodes())
    image = volume.GetImageData() if volume is not None else None
    return int(image.GetDimensions()[2]) if image is not None else 0


def _local_ijk_to_ras(volume) -> np.ndarray:
    from slicer.util import arrayFromVTKMatrix

    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return arrayFromVTKMatrix(m)


def ijk_to_world(volume) -> np.ndarray:
    """The volume's IJK-to-RAS matrix (4x4) in world coordinates: its own IJK to RAS, under its
    parent transform if it has a linear one.

    Raises ValueError if the volume is under a non-linear transform: its frames then have no
    single grid in world space; harden the transform first.
    """
    from slicer.util import arrayFromVTKMatrix

    a = _local_ijk_to_ras(volume)
    parent = volume.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ValueError(f"volume '{volume.GetName()}' is under the non-linear transform "
                             f"'{parent.GetName()}'; harden the transform on the volume first "
                             "(Data module: right-click the transform, 'Harden transform')")
        w = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(w)
        a = arrayFromVTKMatrix(w) @ a
    return a


def frame_center_ras(volume, frame: int) -> tuple:
    """World (RAS) position of the centre of frame ``frame`` of ``volume``, in mm: a slice view
    jumped there (``vtkMRMLSliceNode.JumpSliceByOffsetting``) shows that frame."""
    dims = volume.GetImageData().GetDimensions()
    ijk = np.array([(dims[0] - 1) / 2.0, (dims[1] - 1) / 2.0, float(frame), 1.0])
    return tuple(float(x) for x in (ijk_to_world(volume) @ ijk)[:3])


def frame_at_ras(volume, ras) -> int | None:
    """The frame (K index) whose plane is nearest to the world point ``ras``, or None if the
    point is more than half a frame outside the volume."""
    n = frame_count(volume)
    if n == 0:
        return None
    ijk = np.linalg.solve(ijk_to_world(volume), np.array([*map(float, ras[:3]), 1.0]))
    k = int(np.floor(ijk[2] + 0.5))
    return k if 0 <= k < n else None


def frame_orientation(volume) -> str:
    """The standard slice orientation ("Axial", "Coronal" or "Sagittal") closest to the frames'
    plane: the one whose normal is nearest to the volume's K axis in world space. A slice view
    set to it and then rotated to the volume plane shows whole frames."""
    k_axis = np.abs(ijk_to_world(volume)[:3, 2])
    return ("Sagittal", "Coronal", "Axial")[int(np.argmax(k_axis))]


def shows_frames(slice_to_ras, volume, tolerance: float = 1e-3) -> bool:
    """Whether a slice view with this SliceToRAS (4x4 array) lies in the frames' plane, i.e. its
    normal is parallel to the volume's K axis; then its origin tells the frame shown."""
    normal = np.asarray(slice_to_ras, float)[:3, 2]
    k_axis = ijk_to_world(volume)[:3, 2]
    cosine = abs(normal @ k_axis) / max(np.linalg.norm(normal) * np.linalg.norm(k_axis), 1e-12)
    return bool(cosine > 1.0 - tolerance)
