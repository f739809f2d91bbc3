"""How a checkpoint was trained, as the command that trains it again: the training CLI's flags named
after the config's fields. Light on purpose (no tqdm, no torch.distributed): the service and the
report read it without importing the CLI."""
import shlex
from dataclasses import fields

from models.config import ModelConfig

# ModelConfig fields that are not flags of their own: --model names the backend, the tokenizer
# fixes the vocabulary, and each backend's settings get flags of their own below
NOT_FLAGS = ("backend", "vocab_size", "settings")
ARCH_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name not in NOT_FLAGS)
# fields that shape only how a model is trained, not its weights: a model trained further from a
# checkpoint (--init-from) may change them and nothing else (--digit-offset-max sizes the digit-place table)
TRAINING_ONLY_FIELDS = ("dropout",)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def recipe_command(backend: str, config: dict | None = None) -> str:
    """The command that trains `backend`: its checkpoint's own (`config`, its config.json), with every
    architecture field and setting the checkpoint holds that today's defaults would change spelled
    out; without a checkpoint, the default recipe."""
    command = (config or {}).get("provenance", {}).get("command")
    if not command:
        return f"python -m training.train --model {backend}"
    words = shlex.split(command)
    stored = ModelConfig.from_dict(config["architecture"])
    defaults = ModelConfig(backend=backend)
    pairs = [(flag(name), getattr(stored, name), getattr(defaults, name)) for name in ARCH_FIELDS]
    pairs += [(flag(f"{backend}_{f.name}"), getattr(stored.settings, f.name), getattr(defaults.settings, f.name))
              for f in fields(defaults.settings)]
    for name, value, default in pairs:
        if name not in words and value != default:
            words += [name, str(value)]
    return shlex.join(words)


def lineage_steps(provenance: dict | None) -> int | None:
    """Optimizer steps behind a checkpoint: its own run's, plus those of the checkpoint it was
    trained further from (--init-from), recursively."""
    if not provenance or provenance.get("steps") is None:
        return None
    parent = (provenance.get("init_from") or {}).get("provenance")
    return provenance["steps"] + (lineage_steps(parent) or 0)
