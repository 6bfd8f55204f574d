"""MRML scene <-> numpy for CardioSeg: input frames out of volumes and sequences, label arrays
into segmentation nodes (named, coloured, terminology-coded segments) and back.

Shapes: a volume's voxel array is (K, J, I) = (T, H, W): slice k of a volume is frame k; an RGB
vector volume's is (K, J, I, 3) = (T, H, W, 3), component c = channel c (R, G, B). Label
arrays are uint8 (T, H, W), 0 for background and k for ``classes[k - 1]``. A class is a dict
``{"name", "color": [r, g, b] in 0..1, "terminology": Slicer terminology string}``.

Only MRML and ``vtkSlicer*Logic`` classes are used (no Qt, no ``slicer.app``/``slicer.modules``),
so this runs both in the Slicer application and on the ``slicer-core`` wheel.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk

from Training.errors import InputError

from .geometry import ijk_to_ras_matrix
from .sequencebrowser import primary_sequence


def register_converter_rules() -> None:
    """Register the segmentation converter rules once (the Slicer app already has them).

    Without a rule that knows "Binary labelmap", segments cannot even be created empty.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    have = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for cls in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if cls.__name__ not in have:
            factory.RegisterConverterRule(cls())


def frames_from_node(node) -> tuple[np.ndarray, object]:
    """Frames to segment from a volume or sequence node, and the node giving their geometry.

    - scalar volume: frames = its voxel array (T, H, W) = (K, J, I), a view (no copy);
      reference = the node itself.
    - vector (RGB) volume (vtkMRMLVectorVolumeNode, e.g. a video or a colour PNG/JPEG loaded in
      Slicer): frames (T, H, W, C) = (K, J, I, components), a view, component c = channel c
      (R, G, B); reference = the node itself. Which tasks accept colour is the caller's business
      (``segment.segment_node`` refuses colour for grey tasks and grey for colour tasks).
    - sequence node of single-slice 2D volumes (scalar or vector), or a sequence browser node
      (its primary sequence): frames stacked in sequence order to (T, H, W) (or (T, H, W, C)),
      a copy; reference = the first frame's volume node (it lives in the sequence's internal
      scene).

    Raises TypeError for any other node class, InputError (a ValueError) for an empty sequence,
    a frame that is not a single-slice volume, or frames of differing sizes or components.
    """
    if node is not None and node.IsA("vtkMRMLSequenceBrowserNode"):
        node = primary_sequence(node, "segment")
    if node is not None and node.IsA("vtkMRMLSequenceNode"):
        n = node.GetNumberOfDataNodes()
        if n == 0:
            raise InputError(f"sequence '{node.GetName()}' has no frames")
        frames = []
        for i in range(n):
            frame = node.GetNthDataNode(i)
            if frame is None or not frame.IsA("vtkMRMLScalarVolumeNode") or frame.GetImageData() is None:
                kind = frame.GetClassName() if frame is not None else "nothing"
                raise InputError(f"sequence '{node.GetName()}' frame {i} is a {kind}, not an image volume")
            a = slicer.util.arrayFromVolume(frame)
            if a.shape[0] != 1:
                raise InputError(f"sequence '{node.GetName()}' frame {i} has {a.shape[0]} slices; "
                                 "expected single-slice 2D frames")
            if frames and a.shape != frames[0].shape:
                raise InputError(f"sequence '{node.GetName()}' frame {i} is {_describe_frame(a)}, "
                                 f"but frame 0 is {_describe_frame(frames[0])}")
            frames.append(a)
        return np.concatenate(frames), node.GetNthDataNode(0)
    if node is not None and node.IsA("vtkMRMLScalarVolumeNode") and node.GetImageData() is not None:
        return slicer.util.arrayFromVolume(node), node
    kind = node.GetClassName() if node is not None else "None"
    raise TypeError(f"cannot segment a {kind}: expected a scalar or vector volume, "
                    "a sequence of 2D volumes, or a sequence browser")


def _describe_frame(a: np.ndarray) -> str:
    """'30x20 (WxH)' for a grey frame array (1, H, W), '30x20 (WxH), 3 components' for colour."""
    text = f"{a.shape[2]}x{a.shape[1]} (WxH)"
    return text + (f", {a.shape[3]} components" if a.ndim == 4 else ", 1 component")


def _in_scene(node, scene) -> bool:
    return node.GetScene() is not None and node.GetScene() is scene


def _set_reference_geometry(segmentation_node, volume) -> None:
    """Reference image geometry = the volume's grid. A volume from another scene (a sequence
    item) is not referenced by ID; its geometry is written as the conversion parameter."""
    if _in_scene(volume, segmentation_node.GetScene()):
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        return
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(ijk_to_ras_matrix(volume), volume.GetImageData())
    segmentation_node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)


def _remove_nodes(scene, *nodes) -> None:
    """Remove nodes and their display and storage nodes from the scene."""
    for node in nodes:
        if node is None or node.GetScene() is not scene:
            continue
        extra = []
        if node.IsA("vtkMRMLDisplayableNode"):
            extra += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for e in extra:
            if e is not None and e.GetScene() is scene:
                scene.RemoveNode(e)


def _check_shape(labels: np.ndarray, volume) -> np.ndarray:
    labels = np.asarray(labels)
    want = tuple(reversed(volume.GetImageData().GetDimensions()))  # (K, J, I)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.shape != want:
        raise ValueError(f"labels of shape {labels.shape} do not match volume '{volume.GetName()}' "
                         f"of shape {want} (K, J, I)")
    return labels


def write_segmentation(labels: np.ndarray, reference_volume_node, classes: list[dict],
                       segmentation_node=None, name: str | None = None):
    """Write a label array into a segmentation node in the reference volume's geometry.

    Args:
        labels: uint8 (T, H, W) = the reference's (K, J, I); value k is ``classes[k - 1]``.
        reference_volume_node: volume giving the voxel grid (IJK to RAS, parent transform).
        classes: the model's foreground classes (name, color, terminology).
        segmentation_node: reused if given: all its previous segments are replaced.
        name: name of a newly created node (default: "<reference name> segmentation").

    Every class gets a segment (ID and name = class name), even if it has no voxels. Segments
    share one binary labelmap layer. Returns the vtkMRMLSegmentationNode.
    """
    scene = slicer.mrmlScene
    labels = _check_shape(labels, reference_volume_node)
    if labels.size and int(labels.max()) > len(classes):
        raise ValueError(f"label value {int(labels.max())} but only {len(classes)} classes")
    register_converter_rules()
    same_scene = _in_scene(reference_volume_node, scene)
    transform_id = reference_volume_node.GetTransformNodeID() if same_scene else None
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", name or f"{reference_volume_node.GetName()} segmentation")
        segmentation_node.SetAndObserveTransformNodeID(transform_id)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    _set_reference_geometry(segmentation_node, reference_volume_node)

    segmentation = segmentation_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    with slicer.util.NodeModify(segmentation_node):
        segmentation.RemoveAllSegments()
        for c in classes:
            sid = segmentation.AddEmptySegment(c["name"], c["name"], list(c["color"])[:3])
            segmentation.GetSegment(sid).SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), c["terminology"])
            ids.InsertNextValue(sid)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CardioSeg temporary labelmap")
        try:
            labelmap.SetIJKToRASMatrix(ijk_to_ras_matrix(reference_volume_node))
            labelmap.SetAndObserveTransformNodeID(transform_id)
            slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels, dtype=np.uint8))
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                    labelmap, segmentation_node, ids):
                raise RuntimeError(f"importing labels into '{segmentation_node.GetName()}' failed")
        finally:
            _remove_nodes(scene, labelmap)
    return segmentation_node


def labels_from_segmentation(segmentation_node, reference_volume_node, classes: list[dict]) -> np.ndarray:
    """The inverse of write_segmentation: uint8 (K, J, I) labels in the reference's grid.

    Segments are matched to classes by name (segment k -> value k for ``classes[k - 1]``);
    segments with other names are ignored, missing classes have no voxels. Temporary nodes the
    export creates (labelmap, its display node, colour table) are removed again.
    """
    scene = slicer.mrmlScene
    segmentation = segmentation_node.GetSegmentation()
    ids, values = [], []
    for k, c in enumerate(classes, start=1):
        sid = segmentation.GetSegmentIdBySegmentName(c["name"])
        if sid:
            ids.append(sid)
            values.append(k)
    shape = tuple(reversed(reference_volume_node.GetImageData().GetDimensions()))
    if not ids:
        return np.zeros(shape, np.uint8)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CardioSeg temporary export")
    # our own display node: the default one wants a colour table only the app's colour logic has
    labelmap.SetAndObserveDisplayNodeID(scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode").GetID())
    color = None
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        display = labelmap.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        if not ok:
            raise RuntimeError(f"exporting '{segmentation_node.GetName()}' to a labelmap failed")
        exported = slicer.util.arrayFromVolume(labelmap)  # value i+1 = ids[i]
        lut = np.array([0, *values], np.uint8)
        out = lut[exported]
    finally:
        _remove_nodes(scene, labelmap, color)
    if out.shape != shape:
        raise RuntimeError(f"exported labelmap has shape {out.shape}, expected {shape}")
    return out


def write_segmentation_sequence(labels: np.ndarray, input_node, classes: list[dict],
                                segmentation_sequence=None, name: str | None = None, browser=None):
    """Write per-frame labels of a sequence input as a sequence of segmentation nodes.

    Args:
        labels: uint8 (T, H, W); frame t belongs to item t of the input sequence.
        input_node: the vtkMRMLSequenceNode the frames came from, or a sequence browser
            (its primary sequence); each output item has that frame's geometry and index value.
        segmentation_sequence: a previous result (vtkMRMLSequenceNode) to overwrite, or, for a
            browser, the proxy segmentation node of such a sequence.
        name: name of a newly created sequence (default: "<input name> segmentation").
        browser: the browser to synchronize the result to when ``input_node`` is one of its
            sequences (default: ``input_node`` when it is a browser).

    With a browser, the output sequence is added to it as a synchronized sequence, so its proxy
    segmentation node follows the displayed frame, with "save changes" on, so edits of that
    proxy (Segment Editor) are kept in the item shown. Returns the vtkMRMLSequenceNode.
    """
    scene = slicer.mrmlScene
    if input_node.IsA("vtkMRMLSequenceBrowserNode"):
        browser, sequence = input_node, primary_sequence(input_node, "segment")
    else:
        sequence = input_node
    if labels.shape[0] != sequence.GetNumberOfDataNodes():
        raise ValueError(f"{labels.shape[0]} label frames for {sequence.GetNumberOfDataNodes()} sequence items")
    if browser and segmentation_sequence is not None and segmentation_sequence.IsA("vtkMRMLSegmentationNode"):
        segmentation_sequence = browser.GetSequenceNode(segmentation_sequence)
    if segmentation_sequence is None:
        segmentation_sequence = scene.AddNewNodeByClass(
            "vtkMRMLSequenceNode", name or f"{sequence.GetName()} segmentation")
    segmentation_sequence.SetIndexName(sequence.GetIndexName())
    segmentation_sequence.SetIndexUnit(sequence.GetIndexUnit())
    segmentation_sequence.SetIndexType(sequence.GetIndexType())
    item = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentation_sequence.GetName())
    try:
        with slicer.util.NodeModify(segmentation_sequence):
            segmentation_sequence.RemoveAllDataNodes()
            for t in range(labels.shape[0]):
                write_segmentation(labels[t:t + 1], sequence.GetNthDataNode(t), classes, item)
                segmentation_sequence.SetDataNodeAtValue(item, sequence.GetNthIndexValue(t))
    finally:
        _remove_nodes(scene, item)
    if browser and not browser.IsSynchronizedSequenceNode(segmentation_sequence):
        browser.AddSynchronizedSequenceNode(segmentation_sequence)
    if browser:
        browser.SetSaveChanges(segmentation_sequence, True)
    return segmentation_sequence
