"""Where the frames of a volume are: IJK <-> RAS (MRML) and LPS (SimpleITK, training folder).

Frame k of a volume is its slice k (the K index); a vector volume's components do not count.
A sequence (or browser) node's frames are its items (``frame_count``).

Matrices: ``ijk_to_ras_matrix`` and ``local_ijk_to_ras`` are the volume's own IJK-to-RAS (a
vtkMatrix4x4, a 4x4 array); ``ijk_to_world`` puts it under the volume's linear parent transform.

LPS: MRML works in RAS, SimpleITK (and so the training folder) in LPS. Frame k of a volume is a
single-slice image whose first pixel is voxel (0, 0, k) of the volume; its LPS origin and
direction are the volume's world IJK-to-RAS with the first two rows negated
(``frame_geometry_lps``, and back: ``ijk_to_ras_from_lps``).

MRML only (no Qt, no ``slicer.app``/``slicer.modules``) and no torch.
"""
from __future__ import annotations

import numpy as np
import vtk

from .sequencebrowser import primary_sequence

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


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


def ijk_to_ras_matrix(volume) -> vtk.vtkMatrix4x4:
    """The volume's own IJK-to-RAS matrix (no parent transform), as a new vtkMatrix4x4."""
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return m


def local_ijk_to_ras(volume) -> np.ndarray:
    """The volume's own IJK-to-RAS matrix (no parent transform), as a 4x4 array."""
    from slicer.util import arrayFromVTKMatrix

    return arrayFromVTKMatrix(ijk_to_ras_matrix(volume))


def ijk_to_world(volume) -> np.ndarray:
    """The volume's IJK-to-RAS matrix (4x4) in world coordinates: its own IJK to RAS, under its
    parent transform if it has a linear one.

    Raises ValueError if the volume is under a non-linear transform: its frames then have no
    single grid in world space; harden the transform first.
    """
    from slicer.util import arrayFromVTKMatrix

    a = local_ijk_to_ras(volume)
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


def frame_geometry_lps(volume, frame: int) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) of frame ``frame`` of ``volume`` in SimpleITK's LPS convention.

    origin: (x, y, z) mm of the frame's first pixel (voxel (0, 0, frame)); spacing: (sx, sy, sz)
    mm, sz the distance between frames; direction: 9 values, row-major 3x3, column j the LPS
    direction of image axis j. Uses the volume's world geometry (a linear parent transform is
    applied). Raises ValueError for a non-linear parent transform or a sheared grid, neither of
    which an image file can describe.
    """
    m = ijk_to_world(volume)
    linear = m[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"volume '{volume.GetName()}' has a zero voxel spacing")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise ValueError(f"volume '{volume.GetName()}' is sheared by its parent transform; "
                         "harden the transform (which resamples it) before exporting")
    origin = _RAS_TO_LPS @ (m @ np.array([0.0, 0.0, float(frame), 1.0]))[:3]
    direction = _RAS_TO_LPS @ direction
    return (tuple(float(x) for x in origin), tuple(float(x) for x in spacing),
            tuple(float(x) for x in direction.ravel()))


def ijk_to_ras_from_lps(origin, spacing, direction) -> np.ndarray:
    """The inverse of ``frame_geometry_lps``: a 4x4 IJK-to-RAS matrix from LPS origin, spacing
    and row-major direction (2D geometry, 2 + 2 + 4 values, is taken as a single slice)."""
    origin, spacing, direction = (np.asarray(x, float).ravel() for x in (origin, spacing, direction))
    if origin.size == 2:
        origin, spacing = np.append(origin, 0.0), np.append(spacing, 1.0)
        d2 = direction.reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
    m = np.eye(4)
    m[:3, :3] = _RAS_TO_LPS @ direction.reshape(3, 3) @ np.diag(spacing)
    m[:3, 3] = _RAS_TO_LPS @ origin
    return m


def lps_direction(volume) -> np.ndarray:
    """3x3 directions of the volume's i, j, k axes in LPS (columns), as SimpleITK gives them."""
    from slicer.util import arrayFromVTKMatrix

    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASDirectionMatrix(m)
    ras = arrayFromVTKMatrix(m)[:3, :3]
    return _RAS_TO_LPS @ ras


def frame_reference(world: np.ndarray, dims, frame: int):
    """A volume node (not in the scene, no image memory) with the grid of one frame in world
    coordinates (``world``: the volume's ``ijk_to_world``, ``dims`` its image dimensions): the
    reference for exporting that frame's labels."""
    import slicer

    m = world.copy()
    m[:3, 3] = (world @ np.array([0.0, 0.0, float(frame), 1.0]))[:3]
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(f"frame {frame}")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(m))
    image = vtk.vtkImageData()
    image.SetDimensions(dims[0], dims[1], 1)
    node.SetAndObserveImageData(image)
    return node
