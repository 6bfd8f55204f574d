"""Sequence browsers: which node a video's frames are in, and which item the browser shows.

A video is a vtkMRMLSequenceNode of single-slice volumes, played by a vtkMRMLSequenceBrowserNode
that shows the current item in its *proxy* node (the volume on screen). Choosing that proxy
volume means the whole video (``segmentation_input``): Segment runs on the sequence and writes
a segmentation sequence, which the same browser plays along, so its proxy segmentation shows
the current item's labels. Frame k of a video is item k; the review states of such a run are
stored on the segmentation *sequence* node (``review_nodes``; see ``reviewstates``).

MRML only (no Qt, no ``slicer.app``/``slicer.modules``) and no torch.
"""
from __future__ import annotations


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
