"""Frame preprocessing shared by training and prediction, so both see identical inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize_intensity(x: torch.Tensor, intensity: dict) -> torch.Tensor:
    """Per-frame, per-channel intensity normalisation of (B, C, H, W) float frames.

    ``{"method": "percentile", "lower": p_lo, "upper": p_hi}`` maps those percentiles to 0 and 1
    and clips to [0, 1]; constant frames become 0. ``{"method": "window", "lower": a, "upper": b}``
    maps the fixed values a and b (e.g. Hounsfield units of a CT window) to 0 and 1 and clips.
    """
    if intensity.get("method") == "window":
        lo, hi = float(intensity["lower"]), float(intensity["upper"])
        return ((x.float() - lo) / (hi - lo)).clamp_(0, 1)
    if intensity.get("method") != "percentile":
        raise ValueError(f"unknown intensity normalisation {intensity!r}")
    flat = x.flatten(2).float()
    q = torch.tensor([intensity["lower"] / 100.0, intensity["upper"] / 100.0], dtype=flat.dtype)
    # subsample big frames: percentiles of 64k samples are accurate to well under 1 %
    step = max(1, flat.shape[-1] // 65536)
    lo, hi = torch.quantile(flat[..., ::step], q, dim=-1, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    return ((flat - lo) / span).clamp_(0, 1).view_as(x)


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Resize (B, C, H, W) to ``size`` with antialiasing when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
