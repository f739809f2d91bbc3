"""Parameter counts of every registered backend at a configuration (the paper config by default).

    python -m models.summary [--json]
"""
import argparse
import json

from models import registry
from models.config import ModelConfig
from models.seq2seq import Seq2Seq

PARTS = ("embeddings", "attention", "feed_forward", "layer_norms", "output")


def parameter_breakdown(config: ModelConfig) -> dict:
    """Parameters by component: embeddings, attention, feed-forward, norms, output."""
    model = Seq2Seq(config)
    parts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        if name.startswith(("embed.", "digit_embed.", "digit_proj.")):  # token and digit-place embeddings
            part = "embeddings"
        elif name.startswith("lm_head."):
            part = "output"
        elif "_attn." in name:
            part = "attention"
        elif ".ff." in name:
            part = "feed_forward"
        else:
            part = "layer_norms"
        parts[part] += p.numel()
    parts["total"] = model.num_parameters()
    return parts


def paper_config_table() -> dict:
    """{backend: parameter breakdown} at the paper config, for every registered backend."""
    return {name: parameter_breakdown(ModelConfig(backend=name)) for name in registry.names()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    table = paper_config_table()
    if args.json:
        print(json.dumps(table, indent=2))
        return
    baseline = registry.names()[0]
    print(f"{'component':<14}" + "".join(f"{name:>14}" for name in table))
    for part in (*PARTS, "total"):
        print(f"{part:<14}" + "".join(f"{table[name][part]:>14,}" for name in table))
    for name in table:
        if name != baseline:
            print(f"{name} / {baseline} parameters: {table[name]['total'] / table[baseline]['total']:.3f}")


if __name__ == "__main__":
    main()
