"""The predictor: frames in (numpy), label maps out (numpy), in batches.

Shapes: ``frames`` is (T, H, W) for grey tasks (a single 2D frame (H, W) is accepted) and the
result is uint8 (T, H, W) with 0 for background and k for the k-th class of the model.
The model's preprocessing ``mode`` says how frames meet the network's input ``size``:
"resize" (default) resizes each frame to ``size`` and the logits back to (H, W); "tile" keeps
the native resolution and runs overlapping ``size`` tiles (MONAI sliding-window inference).
Frames are normalised per frame and run through the network in batches.
Each frame also gets an uncertainty (``stats["uncertainty"]``, see ``frame_uncertainty``), from
the same logits: the review goes to the least certain frames first.
A model whose preprocessing has ``"orientation": "LPS"`` (CT, slice by slice) gets its slices in
that order: ``predict(..., direction=...)`` reorders the volume's axes (a view, no copy) and puts
the labels back in the volume's order.
"""
from __future__ import annotations

import threading
import time
from functools import cached_property
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import AsDiscrete
from monai.utils import convert_to_tensor

from .cancel import raise_if_cancelled
from .errors import Cancelled, InputError  # noqa: F401 (re-exported)
from .modelfile import load_model
from .preprocess import from_lps, normalize_intensity, resize, tiled_logits, to_lps, whole_tiles
from .tasks import TASKS
from .trainer import bf16_is_fast


def check_frames(frames: np.ndarray, in_channels: int = 1) -> np.ndarray:
    """Validate and return frames as (T, H, W) (grey) or (T, H, W, C) (colour).

    Raises InputError for: wrong dimensionality, colour where grey is expected, empty or
    constant data, NaN or infinite values.
    """
    a = np.asarray(frames)
    if a.size == 0:
        raise InputError("input is empty (no voxels)")
    if a.dtype.kind not in "uif":
        raise InputError(f"input has unsupported pixel type {a.dtype}")
    if in_channels == 1:
        if a.ndim == 2:
            a = a[None]
        if a.ndim == 4 and a.shape[-1] in (3, 4):
            raise InputError(f"input is colour ({a.shape[-1]} components per pixel) but this task expects grey frames")
        if a.ndim != 3:
            raise InputError(f"input has {a.ndim} dimensions {a.shape}; expected a 2D frame or frames stacked as 3D (T, H, W)")
    else:
        if a.ndim == 3 and a.shape[-1] in (3, 4):
            a = a[None]  # one colour frame (H, W, C)
        if a.ndim == 4 and a.shape[-1] == 4:
            raise InputError("input has 4 components per pixel (RGBA?); this task expects RGB colour frames "
                             "(3 components); drop the alpha channel")
        if a.ndim != 4 or a.shape[-1] != in_channels:
            kind = "grey (one component per pixel)" if a.ndim in (2, 3) else f"shaped {a.shape}"
            raise InputError(f"input is {kind}, but this task expects colour frames with {in_channels} components "
                             "per pixel (RGB)")
    if min(a.shape[1:3]) < 16:
        raise InputError(f"frames of {a.shape[1]}x{a.shape[2]} pixels are too small to segment (minimum 16x16)")
    if a.dtype.kind == "f" and not all(np.isfinite(a[i:i + 32]).all() for i in range(0, len(a), 32)):
        raise InputError("input contains NaN or infinite values")  # checked in chunks: no full-size mask
    lo, hi = a.min(), a.max()
    if lo == hi:
        raise InputError(f"input is constant (every voxel is {lo}); there is nothing to segment")
    return a


def _connected_keep_largest(mask: np.ndarray, keep: int) -> np.ndarray:
    """Keep the ``keep`` largest 8-connected components of a 2D mask.

    Hand-written, not MONAI's ``KeepLargestConnectedComponent`` (which keeps the same pixels):
    on 8 label maps of 512x512 with 3 classes the scipy labelling here runs at 175 frames/s (keep 1)
    and 167 frames/s (keep 3), MONAI's skimage-based transform at 7 and 35 frames/s (same run,
    2 CPU cores), slower than the network itself.
    """
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= keep:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    kept = np.argsort(sizes)[::-1][:keep] + 1
    return np.isin(lab, kept)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_options(spec, batch, threshold, keep_largest) -> None:
    """InputError naming an option out of its range, or one that does not apply to the model."""
    if not _is_int(batch) or batch < 1:
        raise InputError(f"--batch {batch} must be an integer >= 1")
    if not _is_int(keep_largest) or keep_largest < 0:
        raise InputError(f"--keep-largest {keep_largest} must be an integer >= 0 (0 keeps every component)")
    if threshold is None:
        return
    if spec.out_channels > 1:
        names = ", ".join(c["name"] for c in spec.classes)
        raise InputError(f"--threshold does not apply to task '{spec.task}': with several classes ({names}) each "
                         "pixel takes its most likely class")
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:  # NaN fails both comparisons
        raise InputError(f"--threshold {threshold} must be a probability between 0 and 1 (exclusive)")


# A "resize" model squashes each frame into its square input; beyond this aspect ratio (long side
# over short side) the device or organ would be distorted past recognition, so such frames are refused.
MAX_ASPECT = 4.0


PRECISIONS = ("fp32", "fp32-cl", "bf16")


class Predictor:
    """Runs a CardioSeg model file on frames.

    Args:
        model_path: a CardioSeg ``.safetensors`` model file.
        task: if given, the model must be for this task.
        device: "cpu" or "cuda" ("cuda" falls back with an error if absent).
        batch: frames per forward pass.
        threshold: probability threshold; default from the model file.
        keep_largest: keep only this many largest connected components per frame (0: all).
        precision: "bf16" (autocast, channels_last; "auto" on CPUs with bf16 instructions and on
            CUDA), "fp32-cl" (fp32 in channels_last: 1.4-1.7x eager fp32 on 2 AVX2 cores; "auto" on
            CPUs without bf16) or "fp32" (eager, contiguous: the reference).
    """

    def __init__(self, model_path, task=None, device="cpu", batch=8, threshold=None, keep_largest=0,
                 precision="auto", adapt_bn=False):
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for but no CUDA GPU is available")
        self.device = torch.device(device)
        self.model, self.spec = load_model(model_path, task=task, device=self.device)
        check_options(self.spec, batch, threshold, keep_largest)
        self.batch = int(batch)
        pre = self.spec.preprocessing
        self.size = tuple(pre["size"])
        self.mode = pre.get("mode", "resize")
        if self.mode not in ("resize", "tile"):
            raise InputError(f"model preprocessing mode '{self.mode}' is not 'resize' or 'tile'")
        self.threshold = float(pre.get("threshold", 0.5) if threshold is None else threshold)
        self.keep_largest = int(keep_largest)
        if precision == "auto":
            precision = "bf16" if bf16_is_fast(device) else "fp32-cl"
        if precision not in PRECISIONS:
            raise InputError(f"precision '{precision}' is not one of auto, {', '.join(PRECISIONS)}")
        self.precision = precision
        if precision != "fp32":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stats = {}
        self.adapt_bn = bool(adapt_bn)
        self._bn_state = _batchnorm_state(self.model) if self.adapt_bn else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Network only: normalised (B, C, h, w) at model size -> (B, K, h, w) fp32 logits."""
        with torch.inference_mode():
            if self.precision != "fp32":
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                return self.model(x).float()

    def predict(self, frames, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | threading.Event | None = None, direction=None,
                slices: bool = False) -> np.ndarray:
        """Segment frames (see module docstring). ``progress(done, total)`` is called after each
        batch; if ``cancel`` (a callable or Event) becomes true, Cancelled is raised.
        ``direction``: the volume's 3x3 index-to-LPS direction (SimpleITK order); used by models
        with a preprocessing ``orientation`` (None: the axes are taken as they come).
        ``slices``: the frames are independent 2D cases (evaluation on a training folder), so a
        task that needs a whole volume accepts a single slice.
        ``stats["message"]`` says so when nothing was found."""
        a = check_frames(frames, self.spec.in_channels)
        h, w = a.shape[1:3]
        if self.mode == "resize" and max(h, w) > MAX_ASPECT * min(h, w):
            raise InputError(f"frames of {w}x{h} pixels are {max(h, w) / min(h, w):.0f} times longer than wide; the "
                             f"model resizes each frame to {self.size[1]}x{self.size[0]}, which would distort it past "
                             f"recognition (at most {MAX_ASPECT:g}:1): crop the frames first")
        task = TASKS.get(self.spec.task)
        if task is not None and task.check_input is not None:
            task.check_input(a, slices)
        if self.spec.preprocessing.get("orientation") == "LPS" and direction is not None and a.ndim == 3:
            out = from_lps(self._predict(to_lps(a, direction), progress, cancel), direction)
            out = np.ascontiguousarray(out)
            self.stats["uncertainty"] = _frames_order(self.stats["uncertainty"], direction)
        else:
            out = self._predict(a, progress, cancel)
        if not out.any():
            names = " or ".join(c["name"] for c in self.spec.classes)
            self.stats["message"] = f"no {names} found in the input; the segmentation is empty"
        return out

    def _network_input(self, a: np.ndarray) -> torch.Tensor:
        """Frames (B, H, W[, C]) -> normalised network input (B, C, h, w): the model's size in
        resize mode, the whole frame in tile mode."""
        # a read-only view when the input is float32 already (torch then warns once; nothing writes to it)
        chunk = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        x = (chunk[:, None] if chunk.ndim == 3 else chunk.permute(0, 3, 1, 2)).to(self.device)
        if self.mode == "resize":
            x = resize(x, self.size)
        return normalize_intensity(x, self.spec.preprocessing["intensity"])

    def _adapt_batchnorm(self, a: np.ndarray, cancel) -> None:
        """Test-time adaptation: the BatchNorm statistics re-estimated on (up to ADAPT_FRAMES of)
        these frames, from the model file's weights each time; tiles of the model's size in tile mode."""
        from .trainer import recalibrate_batchnorm

        _set_batchnorm_state(self.model, self._bn_state)
        picks = np.unique(np.linspace(0, len(a) - 1, min(len(a), ADAPT_FRAMES)).round().astype(int))
        batches = []
        for start in range(0, len(picks), self.batch):
            raise_if_cancelled(cancel, lambda: "cancelled while adapting to the input")
            x = self._network_input(a[picks[start:start + self.batch]])
            if self.mode == "tile":
                x = whole_tiles(x, self.size)
            batches += list(torch.split(x, self.batch))
        recalibrate_batchnorm(self.model, batches)

    def _predict(self, a: np.ndarray, progress, cancel) -> np.ndarray:
        t_frames, h, w = a.shape[:3]
        out = np.zeros((t_frames, h, w), np.uint8)
        net_s = 0.0
        uncertainty = np.zeros(t_frames, np.float32)
        t0 = time.perf_counter()
        if self.adapt_bn:
            self._adapt_batchnorm(a, cancel)
        adapt_s = time.perf_counter() - t0
        for start in range(0, t_frames, self.batch):
            raise_if_cancelled(cancel, lambda: f"cancelled after {start} of {t_frames} frames")
            x = self._network_input(a[start:start + self.batch])
            tn = time.perf_counter()
            if self.mode == "tile":
                logits = tiled_logits(x, self.size, min(self.batch, TILE_BATCH), self.logits)
            else:
                logits = self.logits(x)
            net_s += time.perf_counter() - tn
            out[start:start + len(x)] = self._labels(logits, (h, w))
            uncertainty[start:start + len(x)] = frame_uncertainty(logits, self._logit_threshold)
            if progress:
                progress(min(start + self.batch, t_frames), t_frames)
        wall = time.perf_counter() - t0
        self.stats = {"frames": t_frames, "seconds": wall, "network_seconds": net_s, "adapt_seconds": adapt_s,
                      "frames_per_second": t_frames / wall if wall else float("inf"),
                      "uncertainty": uncertainty.tolist()}
        return out

    @cached_property
    def _logit_threshold(self) -> float:
        return float(np.log(self.threshold / (1 - self.threshold)))

    @cached_property
    def _discrete(self) -> AsDiscrete:
        """Logits (B, K, H, W) -> labels: argmax over the classes, or one logit over the threshold."""
        if self.spec.out_channels > 1:
            return AsDiscrete(argmax=True, dim=1, keepdim=False)
        # threshold in logit space: sigmoid is monotonic. AsDiscrete keeps logit >= t; the next float32
        # above logit(threshold) keeps logit > logit(threshold), as the predictor always has.
        thr = np.float32(np.log(self.threshold / (1 - self.threshold)))
        return AsDiscrete(threshold=float(np.nextafter(thr, np.float32(np.inf))))

    def _labels(self, logits: torch.Tensor, size) -> np.ndarray:
        """(B, K, h, w) logits -> (B, H, W) uint8 labels at the input size."""
        if logits.shape[1] == 1:
            # threshold after resizing the logit map (not the probabilities): the same labels, cheaper
            up = logits if tuple(logits.shape[-2:]) == tuple(size) else F.interpolate(
                logits, size=size, mode="bilinear", align_corners=False)
            lab = self._discrete(up)[:, 0]
        else:
            up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            lab = self._discrete(up)
        lab = convert_to_tensor(lab, dtype=torch.uint8, track_meta=False).cpu().numpy()  # a MetaTensor from AsDiscrete
        if self.keep_largest:
            for i in range(len(lab)):
                for k in np.unique(lab[i])[1:]:
                    keep = _connected_keep_largest(lab[i] == k, self.keep_largest)
                    lab[i][(lab[i] == k) & ~keep] = 0
        return lab


def _frames_order(values, direction):
    """Per-slice values of the (S, P, L) order back in the volume's frame (K) order, or None when
    the volume's frames are not axial slices (no one value per frame then)."""
    from .preprocess import _lps_axes

    perm, flips = _lps_axes(direction)
    if perm[0] != 0:
        return None
    return list(values[::-1]) if flips[0] else list(values)


DOUBT_FLOOR = 0.1  # pixel entropies below this (probabilities under 1.3 % or over 98.7 %) count as sure


def frame_uncertainty(logits: torch.Tensor, logit_threshold: float = 0.0) -> np.ndarray:
    """Per frame of (B, K, h, w) logits: how unsure the network is of the structure it labels,
    between 0 and 1. The pixels' predictive entropy (normalised to 1 at a coin toss; below
    DOUBT_FLOOR taken as 0) summed over the frame, over that sum plus the number of pixels
    labelled plus one: near 0 when the
    labels are confident (only a thin rim of doubt around them, or a confidently empty frame),
    near 1 when doubt covers more than what is labelled (a faint device that was missed, an
    organ half found)."""
    z = logits.float()
    if z.shape[1] == 1:
        p = torch.sigmoid(z[:, 0])
        h = -(p * torch.log(p.clamp_min(1e-12)) + (1 - p) * torch.log((1 - p).clamp_min(1e-12))) / np.log(2)
        labelled = z[:, 0] > logit_threshold
    else:
        logp = torch.log_softmax(z, dim=1)
        h = -(logp.exp() * logp).sum(1) / np.log(z.shape[1])
        labelled = z.argmax(1) != 0
    doubt = torch.where(h >= DOUBT_FLOOR, h, 0.0).sum((-2, -1))  # not the faint doubt of a whole confident background
    return (doubt / (doubt + labelled.sum((-2, -1)) + 1)).cpu().numpy()


TILE_BATCH = 2  # tiles per forward pass in tile mode: as fast as 8 on 2 CPU cores, ~130-190 MB less memory at 512x512

ADAPT_FRAMES = 64  # at most this many frames (evenly spaced) estimate the statistics for --adapt-bn


def _batchnorm_state(model) -> list:
    """Copies of every BatchNorm layer's running statistics (the model file's)."""
    from .trainer import batchnorm_layers

    return [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(model)]


def _set_batchnorm_state(model, state) -> None:
    from .trainer import batchnorm_layers

    for m, (mean, var) in zip(batchnorm_layers(model), state):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
