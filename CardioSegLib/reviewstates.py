"""Per-frame review state of a segmentation, stored in the scene.

Every frame (slice k of the input volume, see ``geometry``) is UNREVIEWED, REVIEWED or EXCLUDED.
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

from .geometry import frame_count, local_ijk_to_ras
from .sequencebrowser import is_sequence

UNREVIEWED = "unreviewed"
REVIEWED = "reviewed"
EXCLUDED = "excluded"
STATES = (UNREVIEWED, REVIEWED, EXCLUDED)

ATTRIBUTE = "CardioSeg.ReviewStates"
GEOMETRY_ATTRIBUTE = "CardioSeg.ReviewGeometry"
UNCERTAINTY_ATTRIBUTE = "CardioSeg.Uncertainty"
ORDERS = ("uncertainty", "sequential")  # which unreviewed frame comes next: the least certain, or the next one
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


def _by_number(frames) -> bool:
    """Frames identified by position in a list, not by where they lie: a count or a sequence."""
    return _is_count(frames) or is_sequence(frames)


def _anchor(volume) -> np.ndarray:
    """Frame 0's first voxel and the step from frame to frame, in the volume's own RAS (6 values)."""
    m = local_ijk_to_ras(volume)
    return np.concatenate([m[:3, 3], m[:3, 2]])


def _mapped(node, frames, stored: list, fill) -> list:
    """Per-frame values stored on ``node`` (in the frame order of its geometry attribute) as a
    list over the frames of ``frames`` (a count, a sequence or a volume node); ``fill`` where
    nothing is stored for a frame."""
    if _by_number(frames):
        n = int(frames) if _is_count(frames) else frame_count(frames)
        return (list(stored[:n]) + [fill] * n)[:n]
    volume = frames
    n = frame_count(volume)
    geometry = node.GetAttribute(GEOMETRY_ATTRIBUTE)
    if not geometry or not stored:
        return (list(stored[:n]) + [fill] * n)[:n]
    try:
        anchor = np.array([float(x) for x in geometry.split()])
        if anchor.shape != (6,):
            raise ValueError
    except ValueError:
        anchor = _anchor(volume)  # unreadable: take the values as they are
    here = _anchor(volume)
    if np.allclose(anchor, here, rtol=0, atol=1e-6):
        return (list(stored[:n]) + [fill] * n)[:n]
    # where each stored frame lies now: solve the current grid for frame i's position
    inverse = np.linalg.inv(local_ijk_to_ras(volume))
    out = [fill] * n
    for i, c in enumerate(stored):
        point = np.append(anchor[:3] + i * anchor[3:], 1.0)
        k = (inverse @ point)[2]
        j = int(np.floor(k + 0.5))
        if abs(k - j) < 1e-3 and 0 <= j < n:
            out[j] = c
    return out


def _mapped_codes(node, frames) -> str:
    """The stored codes as a string over the frames of ``frames`` (a count or a volume node)."""
    return "".join(_mapped(node, frames, _codes(node), _CODE[UNREVIEWED]))


def _stored_uncertainty(node) -> list:
    out = []
    for word in (node.GetAttribute(UNCERTAINTY_ATTRIBUTE) or "").split():
        try:
            v = float(word)
        except ValueError:
            v = None  # a hand-edited scene: unknown
        out.append(v if v is not None and np.isfinite(v) else None)
    return out


def _uncertainty_text(values) -> str:
    return " ".join("nan" if v is None else f"{float(v):.6g}" for v in values)


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
    if anchor is not None and anchor != node.GetAttribute(GEOMETRY_ATTRIBUTE) and _stored_uncertainty(node):
        # the frames moved since the uncertainty was stored: keep it on its frames
        node.SetAttribute(UNCERTAINTY_ATTRIBUTE, _uncertainty_text(_mapped(node, volume, _stored_uncertainty(node), None)))
    node.SetAttribute(ATTRIBUTE, new)
    if anchor is not None:
        node.SetAttribute(GEOMETRY_ATTRIBUTE, anchor)


def set_uncertainty(node, values, frames=None) -> None:
    """Store each frame's uncertainty (``Training.predictor.frame_uncertainty``; None: unknown)
    on ``node`` beside its review states, in the frame order of ``frames`` (as for
    ``set_review_state``). Review states stored for another frame order are brought to this one
    first, so both stay on their frames."""
    volume = None if frames is None or _by_number(frames) else frames
    if volume is not None:
        n = frame_count(volume)
        if len(values) != n:
            raise ValueError(f"{len(values)} uncertainties for {n} frames")
        codes = _mapped_codes(node, volume)
        if codes.strip(_CODE[UNREVIEWED]):
            node.SetAttribute(ATTRIBUTE, codes)
        node.SetAttribute(GEOMETRY_ATTRIBUTE, " ".join(f"{x:.17g}" for x in _anchor(volume)))
    node.SetAttribute(UNCERTAINTY_ATTRIBUTE, _uncertainty_text(values))


def uncertainties(node, frames) -> list:
    """Each frame's stored uncertainty (None where unknown); ``frames`` as for ``review_states``."""
    return _mapped(node, frames, _stored_uncertainty(node), None)


def clear_review_states(node) -> None:
    """Every frame back to UNREVIEWED, and no uncertainty (e.g. when a new model run replaces the labels)."""
    for name in (ATTRIBUTE, GEOMETRY_ATTRIBUTE, UNCERTAINTY_ATTRIBUTE):
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


def next_to_review(node, frames, after: int = -1, order: str = "uncertainty") -> int | None:
    """The UNREVIEWED frame to review next; None when every frame is reviewed or excluded.
    ``order`` "uncertainty" (default): the least certain one (the highest stored uncertainty;
    frames of unknown uncertainty after those of known, then in frame order), so the frames the
    model got most wrong are corrected first; "sequential": ``next_unreviewed``. The frame
    ``after`` (the current one) comes last either way. ``frames`` as for ``review_states``."""
    if order not in ORDERS:
        raise ValueError(f"unknown review order {order!r}; expected one of {', '.join(ORDERS)}")
    values = uncertainties(node, frames)
    if order == "sequential" or all(v is None for v in values):
        return next_unreviewed(node, frames, after)
    states = review_states(node, frames)
    todo = [k for k, s in enumerate(states) if s == UNREVIEWED and k != after]
    if not todo:
        return next_unreviewed(node, frames, after)
    return min(todo, key=lambda k: (values[k] is None, -(values[k] or 0.0), k))
