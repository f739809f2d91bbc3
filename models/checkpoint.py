"""Checkpoint I/O: safetensors weights plus a JSON config, written atomically, verified at load.

A checkpoint directory holds `model.safetensors` and `config.json` (architecture, tokenizer,
weights format and sha256, provenance, evaluation results). Nothing is ever unpickled.
Weights are stored as float32, as int8 per output channel with float32 scales (`<name>.int8`
+ `<name>.scale`), or as 4-bit groups: every run of GROUP_SIZE values along a matrix row is
mapped onto 16 levels between its own minimum and maximum (`<name>.int4`, two codes per byte,
+ float16 `<name>.scale` and `<name>.min` per group; 4.5 bits per weight). Only learned matrices
are quantized: vectors (biases, norms) and buffers (e.g. the Performer's random features) stay
float32. Everything is dequantized to float32 at load.
"""
import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.config import ModelConfig
from models.seq2seq import Seq2Seq
from models.tokenizer import Tokenizer

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
WEIGHT_FORMATS = ("float32", "int8", "int4")
GROUP_SIZE = 64  # values per 4-bit group: smaller groups track the weights' range more closely


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted or does not match its config."""


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path, write) -> None:
    """Call write(tmp_path) then rename over `path`, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def quantize_int4(matrix: torch.Tensor, group_size: int = GROUP_SIZE) -> dict:
    """4-bit codes (rows, ceil(cols / 2) bytes) plus float16 scale and minimum per group of a row."""
    rows, cols = matrix.shape
    groups = math.ceil(cols / group_size)
    padded = torch.nn.functional.pad(matrix, (0, groups * group_size - cols), mode="replicate")
    grouped = padded.view(rows, groups, group_size)
    low = grouped.amin(dim=2).half()
    scale = ((grouped.amax(dim=2) - low.float()) / 15).clamp(min=1e-7).half()  # > 0 in float16
    codes = torch.round((grouped - low.float()[..., None]) / scale.float()[..., None]).clamp(0, 15).to(torch.uint8)
    codes = codes.view(rows, groups * group_size)[:, :cols]
    if cols % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return {"int4": packed.contiguous(), "scale": scale, "min": low}


def dequantize_int4(packed, scale, low, cols: int, group_size: int = GROUP_SIZE) -> torch.Tensor:
    codes = torch.stack([packed & 0x0F, packed >> 4], dim=2).view(packed.shape[0], -1)[:, :cols]
    index = torch.arange(cols) // group_size
    return low.float()[:, index] + codes.float() * scale.float()[:, index]


def quantize_state(state: dict, weights_format: str = "int8", buffers=(),
                   group_size: int = GROUP_SIZE) -> tuple[dict, dict]:
    """Quantize every learned matrix (not vectors, not `buffers`); return tensors and metadata."""
    out, shapes = {}, {}
    for name, tensor in state.items():
        tensor = tensor.detach().float().cpu()
        if tensor.dim() == 2 and name not in buffers and weights_format == "int4":
            for suffix, part in quantize_int4(tensor, group_size).items():
                out[f"{name}.{suffix}"] = part
            shapes[name] = list(tensor.shape)
        elif tensor.dim() == 2 and name not in buffers:
            scale = tensor.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # one scale per output row
            out[f"{name}.int8"] = torch.round(tensor / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[f"{name}.scale"] = scale
        else:
            out[name] = tensor.contiguous()
    metadata = {"format": weights_format}
    if weights_format == "int4":
        metadata.update(group_size=str(group_size), shapes=json.dumps(shapes))
    return out, metadata


def dequantize_state(stored: dict, metadata: dict | None = None) -> dict:
    state = {}
    metadata = metadata or {}
    shapes = json.loads(metadata.get("shapes", "{}"))
    group_size = int(metadata.get("group_size", GROUP_SIZE))
    for name, tensor in stored.items():
        if name.endswith((".scale", ".min")):
            continue
        if name.endswith(".int4"):
            base = name[: -len(".int4")]
            state[base] = dequantize_int4(tensor, stored[f"{base}.scale"], stored[f"{base}.min"], shapes[base][1], group_size)
        elif name.endswith(".int8"):
            base = name[: -len(".int8")]
            state[base] = tensor.float() * stored[f"{base}.scale"][:, None]
        else:
            state[name] = tensor.float()
    return state


@contextmanager
def weights_as_stored(model: torch.nn.Module, weights_format: str, group_size: int = GROUP_SIZE):
    """Inside, every matrix a `weights_format` checkpoint quantizes holds exactly what that file would
    give back at load; the float weights return on exit. Gradients taken inside are the straight-through
    estimate for the float weights (quantization-aware training): updates smaller than a rounding step
    accumulate in float until they move a stored value, where plain training would round them away."""
    if weights_format == "float32":
        yield
        return
    kept = {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:  # what quantize_state quantizes (buffers are not parameters)
                stored, metadata = quantize_state({name: parameter}, weights_format, group_size=group_size)
                kept[name] = parameter.data
                parameter.data = dequantize_state(stored, metadata)[name].to(parameter.device, parameter.dtype)
    try:
        yield
    finally:
        for name, parameter in model.named_parameters():
            if name in kept:
                parameter.data = kept[name]


def save_checkpoint(model: Seq2Seq, directory, tokenizer: Tokenizer, weights_format: str = "float32",
                    extra: dict | None = None, group_size: int = GROUP_SIZE) -> dict:
    """Write weights then config (the config names the weights' sha256); return the config dict."""
    if weights_format not in WEIGHT_FORMATS:
        raise ValueError(f"weights format must be one of {WEIGHT_FORMATS}, got {weights_format!r}")
    directory = Path(directory)
    model = getattr(model, "module", model)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": weights_format}
    if weights_format != "float32":
        state, metadata = quantize_state(state, weights_format, buffers={name for name, _ in model.named_buffers()},
                                         group_size=group_size)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata=metadata))
    config = dict(extra or {})
    config.update({
        "model": model.config.backend,
        "architecture": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "parameters": model.num_parameters(),
        "weights": {"file": WEIGHTS_FILE, "format": weights_format,
                    "sha256": sha256_file(directory / WEIGHTS_FILE),
                    "bytes": (directory / WEIGHTS_FILE).stat().st_size},
    })
    write_json(directory / CONFIG_FILE, config)
    return config


def read_config(directory) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint config (expected {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


def load_checkpoint(directory, device="cpu"):
    """Rebuild (model in eval mode, tokenizer, config dict) from a checkpoint directory, verified."""
    directory = Path(directory)
    config = read_config(directory)
    weights_path = directory / config.get("weights", {}).get("file", WEIGHTS_FILE)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    expected = config.get("weights", {}).get("sha256")
    actual = sha256_file(weights_path)
    if expected != actual:
        raise CheckpointError(f"{weights_path}: sha256 {actual} does not match {expected} in {CONFIG_FILE}")
    try:
        model_config = ModelConfig.from_dict(config["architecture"])
        tokenizer = Tokenizer.from_dict(config["tokenizer"])
        stored = load_file(weights_path)
        with safe_open(weights_path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (KeyError, TypeError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{directory}: cannot read checkpoint ({err})") from err
    model = Seq2Seq(model_config)
    try:
        state = dequantize_state(stored, metadata)
    except (KeyError, IndexError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{weights_path}: quantized tensors are inconsistent ({err})") from err
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got_shapes = {k: tuple(v.shape) for k, v in state.items()}
    if expected_shapes != got_shapes:
        missing = sorted(set(expected_shapes) - set(got_shapes))[:3]
        wrong = sorted(k for k in set(expected_shapes) & set(got_shapes) if expected_shapes[k] != got_shapes[k])[:3]
        raise CheckpointError(f"{weights_path}: tensors do not match the architecture "
                              f"(missing {missing}, wrong shapes {wrong})")
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer, config
