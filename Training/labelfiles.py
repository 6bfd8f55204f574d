"""Label files read for export (``cardioseg export --labels``): a Slicer ``.seg.nrrd`` or a labelmap image,
as a label map on the voxel grid of the exported image.

The .seg.nrrd header is parsed here, not by ``slicerio.read_segmentation`` (1.4.0), which this
needs and lacks: slicerio refuses multi-layer files written by ITK/SimpleITK (NRRD kinds
``vector domain domain domain``; it takes only Slicer's ``list ...``), assigns every segment of a
pre-4.11 file (no ``Layer`` field, one layer per segment) to layer 0, and reads no DICOM/NIfTI
labelmap through the same path; ``extract_segments`` overwrites overlapping segments silently
where a training label must refuse them. SimpleITK reads the file once for both kinds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .folderlayout import GEOMETRY_ATOL, GEOMETRY_RTOL, TrainingFolderError


def _segments(image: sitk.Image) -> list[dict]:
    """Segments of a Slicer .seg.nrrd header: [{name, layer, value}] in file order."""
    keys = set(image.GetMetaDataKeys())
    n_layers = image.GetNumberOfComponentsPerPixel()
    out = []
    n = 0
    while f"Segment{n}_ID" in keys or f"Segment{n}_Name" in keys:
        p = f"Segment{n}_"
        name = image.GetMetaData(p + "Name") if p + "Name" in keys else image.GetMetaData(p + "ID")
        try:
            value = int(image.GetMetaData(p + "LabelValue")) if p + "LabelValue" in keys else 1
            # files from before Slicer 4.11 have no LabelValue/Layer: one layer per segment
            layer = int(image.GetMetaData(p + "Layer")) if p + "Layer" in keys else (n if n_layers > 1 else 0)
        except ValueError:
            raise TrainingFolderError(f"segment '{name}' has an invalid LabelValue or Layer field") from None
        if not 0 <= layer < n_layers:
            raise TrainingFolderError(f"segment '{name}' is on layer {layer} but the file has {n_layers} layer(s)")
        out.append({"name": name, "layer": layer, "value": value})
        n += 1
    return out


def _paste(labels: sitk.Image, reference: sitk.Image, what: str) -> np.ndarray:
    """labels (a scalar image on the reference's grid, or on a block of it, as Slicer writes a
    segmentation cropped to its extent) as an array (K, J, I) of the reference's shape."""
    ref_size = reference.GetSize()
    if (labels.GetDimension() != reference.GetDimension()
            or not np.allclose(labels.GetSpacing(), reference.GetSpacing(), rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)
            or not np.allclose(labels.GetDirection(), reference.GetDirection(), atol=GEOMETRY_ATOL)):
        raise TrainingFolderError(f"{what} has spacing {labels.GetSpacing()} and direction {labels.GetDirection()}; "
                                  f"the image has {reference.GetSpacing()} and {reference.GetDirection()}")
    offset = np.array(reference.TransformPhysicalPointToContinuousIndex(labels.GetOrigin()))
    start = np.round(offset).astype(int)
    size = np.array(labels.GetSize())
    if (not np.allclose(offset, start, atol=1e-3) or np.any(start < 0)
            or np.any(start + size > np.array(ref_size))):
        raise TrainingFolderError(f"{what} (size {tuple(size)}, origin {labels.GetOrigin()}) is not on the image's "
                                  f"voxel grid (size {ref_size}, origin {reference.GetOrigin()})")
    arr = sitk.GetArrayViewFromImage(labels)
    out = np.zeros(ref_size[::-1], dtype=arr.dtype)
    sl = tuple(slice(s, s + n) for s, n in zip(start[::-1], size[::-1]))
    out[sl] = arr
    return out


def labels_from_file(path, reference: sitk.Image, classes) -> tuple[np.ndarray, list]:
    """Label map (K, J, I) uint8 of the 3D image ``reference`` from a label file.

    ``path`` is a Slicer ``.seg.nrrd`` (its segments are mapped to ``classes`` by name, using
    the ``SegmentN_Name``, ``SegmentN_LabelValue`` and ``SegmentN_Layer`` header fields; one or
    several layers) or a labelmap image (integer values 0..len(classes)). It must be on the
    reference's voxel grid, or on a block of it. Returns (labels, notes): notes name the
    segments that match no class. Raises TrainingFolderError.
    """
    from .imagefiles import as_frames_image, read_image

    path = Path(path)
    img = read_image(path)
    names = [c["name"] for c in classes]
    notes = []
    if path.name.lower().endswith(".seg.nrrd") or img.HasMetaDataKey("Segment0_ID"):
        segments = _segments(img)
        if not segments:
            raise TrainingFolderError(f"{path.name} has no segments (no Segment0_Name field); "
                                      "is it a Slicer .seg.nrrd?")
        layers = [sitk.VectorIndexSelectionCast(img, i) for i in range(img.GetNumberOfComponentsPerPixel())] \
            if img.GetNumberOfComponentsPerPixel() > 1 else [img]
        layers = [_paste(as_frames_image(lay), reference, path.name) for lay in layers]
        out = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
        used = set()
        for k, name in enumerate(names, start=1):
            match = [s for s in segments if s["name"] == name] or \
                    [s for s in segments if s["name"].strip().lower() == name.lower()]
            if len(match) > 1:
                raise TrainingFolderError(f"{path.name} has {len(match)} segments named '{name}'")
            if not match:
                continue
            s = match[0]
            used.add(id(s))
            mask = layers[s["layer"]] == s["value"]
            clash = mask & (out > 0)
            if clash.any():
                other = names[int(out[clash][0]) - 1]
                raise TrainingFolderError(f"segments '{name}' and '{other}' of {path.name} overlap in "
                                          f"{int(clash.sum())} voxels; a training label has one class per pixel")
            out[mask] = k
        if not used:
            raise TrainingFolderError(f"no segment of {path.name} ({', '.join(s['name'] for s in segments)}) is "
                                      f"named like a class of this task ({', '.join(names)})")
        ignored = [s["name"] for s in segments if id(s) not in used]
        if ignored:
            notes.append(f"ignored segment(s) that are not classes of this task: {', '.join(ignored)}")
        return out, notes
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise TrainingFolderError(f"{path.name} has {img.GetNumberOfComponentsPerPixel()} components per pixel; "
                                  "a labelmap has one")
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind not in "uib":
        raise TrainingFolderError(f"{path.name} has pixel type {arr.dtype}; a labelmap has integer values")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > len(classes)):
        raise TrainingFolderError(f"{path.name} has values {int(arr.min())}..{int(arr.max())}; labels of this task "
                                  f"are 0 (background)..{len(classes)} ({', '.join(names)})")
    img = as_frames_image(sitk.Cast(img, sitk.sitkUInt8))
    return _paste(img, reference, path.name), notes
