"""The CardioSeg model file: one ``.safetensors`` file, weights plus a JSON spec in its metadata.

This module is the only reader and the only writer of that format. Loading never unpickles:
safetensors parses a JSON header and raw tensor bytes. A SHA-256 over the tensors and the spec
(format 2; over the tensors only in format 1, the bundled models), stored in the metadata, catches
files that were altered after they were written. The spec is checked against a schema on reading,
and against the task's classes and input channels on loading.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import architectures
from .errors import CardioSegError

FORMAT = "cardioseg-model"
FORMAT_VERSION = 2  # 2: the checksum covers the tensors and the spec; 1 (still read): the tensors only
META_KEY = "cardioseg"
MAX_SIZE = 4096  # largest preprocessing size (pixels a side) a model file may ask for


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
    def tile_mode(self) -> bool:
        """Whether the model meets frames at their own resolution, in tiles of its size (else resized to it)."""
        return self.preprocessing.get("mode") == "tile"

    @property
    def out_channels(self) -> int:
        return 1 if len(self.classes) == 1 else len(self.classes) + 1

    def build(self) -> torch.nn.Module:
        """The network with random weights; ModelFileError if the architecture or its
        ``architecture_args`` cannot build one."""
        if self.architecture not in architectures.ARCHITECTURES:
            raise ModelFileError(f"unknown architecture '{self.architecture}'; "
                                 f"known: {', '.join(sorted(architectures.ARCHITECTURES))}")
        try:
            return architectures.build(
                self.architecture,
                in_channels=self.in_channels,
                classes=self.out_channels,
                **self.architecture_args,
            )
        except Exception as e:  # arguments from a file can fail anywhere in a network's constructor
            raise ModelFileError(f"architecture_args {_short(self.architecture_args)} do not fit architecture "
                                 f"'{self.architecture}': {type(e).__name__}: {e}") from None


def _short(value, limit=80) -> str:
    text = json.dumps(value, default=repr) if isinstance(value, (dict, list, str)) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v, lo, hi) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _class_ok(c) -> bool:
    return (isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"].strip() != "" and c["name"].isprintable()
            and isinstance(c.get("color"), list) and len(c["color"]) == 3
            and all(_number(x) and 0 <= x <= 1 for x in c["color"]) and isinstance(c.get("terminology"), str))


def _intensity_ok(v) -> bool:
    if not isinstance(v, dict) or not (_number(v.get("lower")) and _number(v.get("upper"))):
        return False
    if v.get("method") == "percentile":
        return 0 <= v["lower"] < v["upper"] <= 100
    return v.get("method") == "window" and v["lower"] < v["upper"]


def _unknown(field, known):
    """The message maker of a name field: "unknown task 'x'; known: ..."."""
    def message(v):
        if isinstance(v, str):  # quoted as is when short and printable: one line, whatever the file holds
            got = f"unknown {field} " + (f"'{v}'" if v.isprintable() and len(v) <= 80 else _short(v))
        else:
            got = f"{field} must be a name (got {_short(v)})"
        return f"{got}; known: {', '.join(known)}"

    return message


def _schema():
    """(field, required, usable(value), what it must be, or a message made from the value):
    the whole spec, in checking order. (preprocessing.mode, "resize" or "tile", is the
    Predictor's own check: an InputError naming the mode.)"""
    from .tasks import TASKS

    return [
        ("task", True, lambda v: isinstance(v, str) and v in TASKS, _unknown("task", TASKS)),
        ("architecture", True, lambda v: isinstance(v, str) and v in architectures.ARCHITECTURES,
         _unknown("architecture", sorted(architectures.ARCHITECTURES))),
        ("architecture_args", True, lambda v: isinstance(v, dict), "must be an object of keyword arguments"),
        ("in_channels", True, lambda v: _whole(v, 1, 3) and v != 2, "must be 1 (grey) or 3 (RGB)"),
        ("classes", True, lambda v: isinstance(v, list) and len(v) > 0 and all(map(_class_ok, v)),
         'must be a non-empty list of {"name", "color": [r, g, b] in 0..1, "terminology"}'),
        ("preprocessing", True, lambda v: isinstance(v, dict), "must be an object"),
        ("preprocessing.size", True,
         lambda v: isinstance(v, list) and len(v) == 2 and all(_whole(x, 1, MAX_SIZE) for x in v),
         f"must be [height, width], whole numbers of pixels in 1..{MAX_SIZE}"),
        ("preprocessing.intensity", True, _intensity_ok,
         'must be {"method": "percentile", "lower", "upper"} with 0 <= lower < upper <= 100, '
         'or {"method": "window", "lower", "upper"} with lower < upper'),
        ("preprocessing.threshold", False, lambda v: _number(v) and 0 < v < 1, "must be a number in (0, 1)"),
        ("preprocessing.orientation", False, lambda v: isinstance(v, str), "must be a string"),
        ("version", False, lambda v: isinstance(v, str), "must be a string"),
        ("training", False, lambda v: isinstance(v, dict), "must be an object"),
        ("metrics", False, lambda v: isinstance(v, dict), "must be an object"),
    ]


def spec_problem(info) -> str | None:
    """The first problem of a parsed spec (``info``, a dict) as "<field> ...", or None if usable."""
    if not isinstance(info, dict):
        return f"the spec is a JSON {type(info).__name__}, not an object"
    for name, required, usable, what in _schema():
        *parents, key = name.split(".")
        where = info
        for p in parents:
            where = where[p]  # an object: its own row came first
        if key not in where:
            if required:
                return f"{name} is missing"
            continue
        try:
            ok = usable(where[key])
        except TypeError:  # e.g. a list where a name belongs
            ok = False
        if not ok:
            return what(where[key]) if callable(what) else f"{name} {what} (got {_short(where[key])})"
    return None


def check_task(path, spec: ModelSpec, task: str) -> None:
    """Raise ModelFileError unless ``spec`` is for ``task``: the same task name, class names (in
    order) and input channels. Colours and terminology may differ."""
    from .tasks import TASKS

    name = Path(path).name
    if spec.task != task:
        raise ModelFileError(f"{name} is a model for task '{spec.task}', not '{task}'")
    expected = TASKS[task]
    mine, theirs = [c["name"] for c in spec.classes], [c["name"] for c in expected.classes]
    if mine != theirs:
        raise ModelFileError(f"{name} is not a valid model for task '{task}': its classes are "
                             f"{', '.join(mine)}, the task's are {', '.join(theirs)}")
    if spec.in_channels != expected.in_channels:
        raise ModelFileError(f"{name} is not a valid model for task '{task}': it takes {spec.in_channels} "
                             f"input channel(s), the task has {expected.in_channels}")


def _digest(tensors: dict[str, torch.Tensor], spec_json: str | None = None) -> str:
    """SHA-256 over the tensors (names, dtypes, shapes, bytes), then the stored spec JSON
    string when given (format 2)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    if spec_json is not None:
        h.update(b"\0spec\0" + spec_json.encode())
    return h.hexdigest()


def _new_file_mode(path: Path) -> int:
    """Create ``path`` empty and return the mode it got: 0o666 less the process umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def save_model(path, model: torch.nn.Module, spec: ModelSpec, dtype=torch.float16) -> Path:
    """Write weights (floating tensors cast to ``dtype``) and spec atomically to ``path``."""
    path = Path(path)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        tensors[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    spec_json = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(spec)})
    meta = {META_KEY: spec_json, "sha256": _digest(tensors, spec_json)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        mode = _new_file_mode(tmp)
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, mode)  # safetensors writes 0600; a model file gets the user's umask like any other
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    return _spec_from_meta(path, meta)[0]


def _spec_from_meta(path: Path, meta: dict) -> tuple[ModelSpec, int]:
    """(spec, format version) from a file's metadata; ModelFileError naming the first problem."""
    try:
        info = json.loads(meta[META_KEY])
    except (KeyError, TypeError, ValueError, RecursionError):  # ValueError: not JSON
        raise ModelFileError(f"{path.name} is a safetensors file but not a CardioSeg model (no spec)") from None
    version = info.get("format_version") if isinstance(info, dict) else None
    if isinstance(info, dict) and (info.get("format") != FORMAT or version not in (1, FORMAT_VERSION)):
        raise ModelFileError(f"{path.name}: unsupported model format {_short(info.get('format'))} "
                             f"v{_short(version)} (this CardioSeg reads {FORMAT} v1 and v{FORMAT_VERSION})")
    problem = spec_problem(info)
    if problem:
        raise ModelFileError(f"{path.name}: not a valid CardioSeg model: {problem}")
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    return ModelSpec(**{k: v for k, v in info.items() if k in names}), version


def load_model(path, task: str | None = None, device="cpu") -> tuple[torch.nn.Module, ModelSpec]:
    """Load a model file into an eval-mode fp32 network.

    Raises ModelFileError if the file is missing, truncated, altered, its spec is invalid, or it
    is not a model for ``task`` (without one: for the task its spec names), see ``check_task``.
    """
    path = Path(path)
    first = read_spec(path)
    check_task(path, first, task or first.task)  # before reading the weights
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as e:
        raise ModelFileError(f"{path.name} is truncated or corrupt: {e}") from None
    spec, version = _spec_from_meta(path, meta)  # this very header, which the checksum covers
    check_task(path, spec, task or spec.task)
    if meta.get("sha256") != _digest(tensors, meta[META_KEY] if version >= 2 else None):
        raise ModelFileError(f"{path.name} failed its checksum: the weights or the spec were altered or damaged")
    try:
        model = spec.build()
    except ModelFileError as e:
        raise ModelFileError(f"{path.name}: not a valid CardioSeg model: {e}") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{path.name}: weights do not match architecture '{spec.architecture}': {e}") from None
    return model.eval().to(device), spec
