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
    out; for a checkpoint trained further from another (--init-from), the commands of its whole
    lineage joined by &&; without a checkpoint, the default recipe."""
    return " && ".join(lineage_commands(backend, config))


def lineage_commands(backend: str, config: dict | None = None) -> list[str]:
    """recipe_command's commands, the first run first; each later one starts from the checkpoint the
    one before it wrote."""
    chain, provenance = [], (config or {}).get("provenance")
    while provenance and provenance.get("command"):
        chain.append(shlex.split(provenance["command"]))
        provenance = (provenance.get("init_from") or {}).get("provenance")
    if not chain:
        return [f"python -m training.train --model {backend}"]
    chain.reverse()
    first = chain[0]
    stored = ModelConfig.from_dict(config["architecture"])
    defaults = ModelConfig(backend=backend)
    pairs = [(flag(name), getattr(stored, name), getattr(defaults, name)) for name in ARCH_FIELDS]
    pairs += [(flag(f"{backend}_{f.name}"), getattr(stored.settings, f.name), getattr(defaults.settings, f.name))
              for f in fields(defaults.settings)]
    for name, value, default in pairs:
        if name not in first and value != default:
            first += [name, str(value)]
    for parent, child in zip(chain, chain[1:]):
        written = parent[parent.index("--out") + 1] if "--out" in parent else f"checkpoints/{backend}"
        child[child.index("--init-from") + 1] = written
    return [shlex.join(words) for words in chain]


def lineage_steps(provenance: dict | None) -> int | None:
    """Optimizer steps behind a checkpoint: its own run's, plus those of the checkpoint it was
    trained further from (--init-from), recursively."""
    return lineage_total(provenance, "steps")


def lineage_total(provenance: dict | None, key: str):
    """A provenance number (steps, wall_seconds) summed over the checkpoint's lineage; None if unknown."""
    if not provenance or provenance.get(key) is None:
        return None
    parent = (provenance.get("init_from") or {}).get("provenance")
    return provenance[key] + (lineage_total(parent, key) or 0)
