"""``make demo``: segment a generated fluoroscopy run through the same MRML code the module uses.

Writes the run (NRRD), the segmentation (.seg.nrrd, written by Slicer's storage node), an
overlay GIF and PNG, and prints a one-line summary: frames, Dice against the generator's
mask, frames/s.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def overlay(frames: np.ndarray, labels: np.ndarray, color) -> np.ndarray:
    """(T,H,W) frames and labels -> (T,H,W,3) uint8 with labels blended in ``color`` (0..1)."""
    lo, hi = np.percentile(frames, (0.5, 99.5))
    grey = (np.clip((frames - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, -1)
    c = (np.array(color) * 255).astype(np.uint8)
    on = labels > 0
    rgb[on] = (0.45 * rgb[on] + 0.55 * c).astype(np.uint8)
    return rgb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model", help="model file (default: bundled)")
    a = ap.parse_args(argv)

    import SimpleITK as sitk
    import slicer
    from PIL import Image
    from tqdm import tqdm

    from Training import fluoro
    from Training.synthetic_train import dice
    from Training.tasks import get_task

    from .scene import labels_from_segmentation
    from .segment import segment_node

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = fluoro.HELD_OUT_SEED_BASE + 1
    frames, masks = fluoro.generate_run(seed, n_frames=a.frames, size=(a.size, a.size))
    run_path = out / "sample_run.nrrd"
    img = sitk.GetImageFromArray(frames.round().astype(np.uint16))
    img.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(img, str(run_path), useCompression=True)

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sample_run")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(run_path))
    if not storage.ReadData(volume):
        sys.exit(f"demo: could not read {run_path}")

    task = get_task("catheter")
    model = a.model or task.bundled_model
    bar = tqdm(total=a.frames, unit="frame", desc="Segment", file=sys.stderr)
    seg, stats = segment_node(volume, model, task="catheter",
                              progress=lambda done, total: bar.update(done - bar.n))
    bar.close()
    seg_path = out / "sample_run.seg.nrrd"
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(seg_path))
    if not writer.WriteData(seg):
        sys.exit(f"demo: could not write {seg_path}")

    labels = labels_from_segmentation(seg, volume, task.classes)
    score = dice(labels > 0, masks > 0)
    rgb = overlay(frames, labels, task.classes[0]["color"])
    gif = out / "overlay.gif"
    Image.fromarray(rgb[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in rgb[1:]],
                                 duration=100, loop=0)
    picks = np.linspace(0, a.frames - 1, 4).astype(int)
    Image.fromarray(np.concatenate(list(rgb[picks]), 1)).save(out / "overlay.png")
    print(f"demo: {stats['frames']} frames {a.size}x{a.size}, Dice {score:.3f} against the generator's mask, "
          f"{stats['frames_per_second']:.1f} frames/s; wrote {seg_path}, {gif}, {out / 'overlay.png'}")


if __name__ == "__main__":
    main()
