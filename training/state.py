"""Resumable training state: float32 weights and AdamW moments in safetensors, the rest in JSON.

Written atomically to a run directory (git-ignored `runs/` by default) every few minutes;
`--resume` continues from it. Nothing is pickled.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.checkpoint import atomic_write, write_json

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


def save_train_state(run_dir, model, optimizer, progress: dict) -> None:
    """Write model + optimizer tensors, then the JSON that marks the state complete."""
    run_dir = Path(run_dir)
    tensors = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    atomic_write(run_dir / STATE_TENSORS, lambda tmp: save_file(tensors, tmp))
    write_json(run_dir / STATE_JSON, {**progress, "param_groups": opt["param_groups"]})


def load_train_state(run_dir, model, optimizer, device) -> dict:
    """Restore model and optimizer in place; return the saved progress dict."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_JSON).is_file():
        raise ValueError(f"{run_dir}: no training state to resume ({STATE_JSON} missing)")
    progress = json.loads((run_dir / STATE_JSON).read_text())
    tensors = load_file(run_dir / STATE_TENSORS)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value if slot == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": progress.pop("param_groups")})
    return progress


def parameters_digest(model) -> float:
    """A cheap fingerprint of all weights, for checking that data-parallel ranks agree."""
    with torch.no_grad():
        return float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(model.parameters())))
