"""Parameter counts of both backends at a configuration (the paper config by default).

    python -m models.summary [--json]
"""
import argparse
import json

from models.config import ATTENTIONS, ModelConfig
from models.seq2seq import Seq2Seq


def parameter_breakdown(config: ModelConfig) -> dict:
    """Parameters by component: embeddings, attention, feed-forward, norms, output."""
    model = Seq2Seq(config)
    parts = {"embeddings": 0, "attention": 0, "feed_forward": 0, "layer_norms": 0, "output": 0}
    for name, p in model.named_parameters():
        if name.startswith("embed."):
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    table = {name: parameter_breakdown(ModelConfig(attention=name)) for name in ATTENTIONS}
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'component':<14}" + "".join(f"{name:>14}" for name in table))
    for part in table[ATTENTIONS[0]]:
        print(f"{part:<14}" + "".join(f"{table[name][part]:>14,}" for name in table))
    ratio = table["memsizer"]["total"] / table["transformer"]["total"]
    print(f"memsizer / transformer parameters: {ratio:.3f}")


if __name__ == "__main__":
    main()
