"""Training checkpoints as safetensors (never pickles): model weights, optimiser state and a
JSON-serialisable ``state`` dict (epoch or step, scheduler, early stopping, ...) in the metadata.

Tensor keys: ``model.<name>`` for the weights, ``opt.<param index>.<name>`` for the optimiser's
per-parameter state. Metadata: one string entry per key of ``meta`` (values are JSON) plus
``opt_groups``, the optimiser's hyper-parameters per parameter group (lr, momentum, ...).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def save_checkpoint(path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict) -> Path:
    """Write model, optimiser and ``meta`` (each value JSON-serialisable) atomically to ``path``."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            if v is not None:
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    metadata["opt_groups"] = json.dumps(groups)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> dict:
    """Restore model (and optimiser) from ``path``; returns the ``meta`` dict that was saved."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    t = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    if opt is not None:
        sd = opt.state_dict()
        state = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        sd["state"] = state
        if "opt_groups" in metadata:
            for g, saved in zip(sd["param_groups"], json.loads(metadata["opt_groups"])):
                g.update(saved)
        opt.load_state_dict(sd)
    metadata.pop("opt_groups", None)
    return {k: json.loads(v) for k, v in metadata.items()}
