"""The CardioSeg model file: one ``.safetensors`` file, weights plus a JSON spec in its metadata.

This module is the only reader and the only writer of that format. Loading never unpickles:
safetensors parses a JSON header and raw tensor bytes. A SHA-256 over the tensors, stored in
the metadata, catches files that were altered after they were written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import architectures
from .errors import CardioSegError

FORMAT = "cardioseg-model"
FORMAT_VERSION = 1
META_KEY = "cardioseg"


class ModelFileError(CardioSegError):
    """A model file that cannot be used: missing, truncated, altered, or for another task."""


@dataclass
class ModelSpec:
    """Everything besides the weights that is needed to run a model.

    preprocessing: ``size`` [H, W] the network sees; ``intensity`` the per-frame normalisation
    (``{"method": "percentile", "lower": 0.5, "upper": 99.5}``); ``threshold`` on probabilities.
    classes: foreground classes, each ``{"name", "color" [r,g,b] 0..1, "terminology"}``.

    Output channels (one convention for every layer): a single foreground class has one logit
    channel (sigmoid, threshold); K > 1 classes have K + 1 channels (softmax, argmax) with channel
    0 the background, so channel k is label k.
    """

    task: str
    architecture: str
    architecture_args: dict
    in_channels: int
    classes: list
    preprocessing: dict
    version: str = "0.0.0"
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        return 1 if len(self.classes) == 1 else len(self.classes) + 1

    def build(self) -> torch.nn.Module:
        return architectures.build(
            self.architecture,
            in_channels=self.in_channels,
            classes=self.out_channels,
            **self.architecture_args,
        )


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_model(path, model: torch.nn.Module, spec: ModelSpec, dtype=torch.float16) -> Path:
    """Write weights (floating tensors cast to ``dtype``) and spec atomically to ``path``."""
    path = Path(path)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        tensors[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    meta = {
        META_KEY: json.dumps(
            {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(spec)}
        ),
        "sha256": _digest(tensors),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_spec(path) -> ModelSpec:
    """Read only the spec (no weights) of a model file; raises ModelFileError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ModelFileError(f"{path.name} is not a readable model file (truncated or corrupt): {e}") from None
    return _spec_from_meta(path, meta)


def _spec_from_meta(path: Path, meta: dict) -> ModelSpec:
    try:
        info = json.loads(meta[META_KEY])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(f"{path.name} is a safetensors file but not a CardioSeg model (no spec)") from None
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path.name}: unsupported model format {info.get('format')} v{info.get('format_version')}")
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    return ModelSpec(**{k: v for k, v in info.items() if k in names})


def load_model(path, task: str | None = None, device="cpu") -> tuple[torch.nn.Module, ModelSpec]:
    """Load a model file into an eval-mode fp32 network.

    Raises ModelFileError if the file is missing, truncated, altered, or its task is not ``task``.
    """
    path = Path(path)
    spec = read_spec(path)
    if task is not None and spec.task != task:
        raise ModelFileError(f"{path.name} is a model for task '{spec.task}', not '{task}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata()
    except Exception as e:
        raise ModelFileError(f"{path.name} is truncated or corrupt: {e}") from None
    if meta.get("sha256") != _digest(tensors):
        raise ModelFileError(f"{path.name} failed its checksum: the weights were altered or damaged")
    model = spec.build()
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{path.name}: weights do not match architecture '{spec.architecture}': {e}") from None
    return model.eval().to(device), spec
