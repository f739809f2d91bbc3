"""What /models and the page report per backend: its description, its checkpoint's recipe and
size, the runtime serving it, and its stored accuracy per place (no torch here)."""
from models import registry
from models.config import LEGACY_DEFAULTS, ModelConfig
from models.runtimes import LABELS, evaluation_split
from models.task import PLACE_NAMES
from training.recipe import lineage_steps, recipe_command

# the evaluations the page and /models show per place, in this order ("train": the training distribution)
RELIABILITY_SPLITS = ("interpolate", "train", "extrapolate")


def training_balanced_share(config: dict | None) -> float:
    """The share of place-balanced questions in a checkpoint's training batches, from its recorded
    recipe (0: DeepMind's sampler alone, also for older checkpoints)."""
    recipe = (config or {}).get("provenance", {}).get("recipe", {})
    return float(recipe.get("balanced_share") or 0.0)


def training_beyond_share(config: dict | None) -> float:
    """The share of questions beyond a number's digits in a checkpoint's training batches (0 for
    older checkpoints, whose recipe had none)."""
    recipe = (config or {}).get("provenance", {}).get("recipe", {})
    return float(recipe.get("beyond_share") or 0.0)


def measured_beyond_accuracy(config: dict | None) -> float | None:
    """The share of questions beyond a number's digits the checkpoint's files answered, from its largest
    record of them measured on these weights (None if never measured)."""
    config = config or {}
    weights = config.get("weights", {}).get("sha256")
    records = [r for r in config.get("evaluation", {}).values()
               if r.get("split") == "beyond" and r.get("weights_sha256") == weights and r.get("total")]
    return max(records, key=lambda r: r["total"])["accuracy"] if records else None


def describe_backends(configs: dict, runtimes: dict, load_errors: dict, required, int8_kernel: str) -> list[dict]:
    """One row per registered backend, loaded or not."""
    rows = []
    for spec in registry.backends():
        name = spec.name
        config = configs.get(name)
        row = {"name": name, "display_name": spec.display_name, "paper": spec.paper, "summary": spec.summary,
               "shipped": spec.shipped, "required": name in required, "ready": config is not None,
               "train_command": recipe_command(name, config), "runtime": runtimes.get(name),
               "runtime_label": LABELS.get(runtimes.get(name))}
        if config is None:
            row["error"] = load_errors.get(name)
            rows.append(row)
            continue
        arch, evaluation = config["architecture"], config.get("evaluation", {})
        reliability = per_place_reliability(evaluation, runtimes.get(name, "torch"), int8_kernel)
        row.update({
            "parameters": config["parameters"],
            "architecture": {"backend": name, **{k: arch[k] for k in (
                "n_encoder_layers", "n_decoder_layers", "d_model", "d_ff", "n_heads")},
                # how it knows where a digit is (what a stored config without a mode meant)
                "positions": {shown: {**LEGACY_DEFAULTS, **arch}[field] for shown, field in (
                    ("source", "source_positions"), ("digits", "digit_positions"),
                    ("relative", "relative_positions"))},
                "settings": arch.get("settings") or {}},
            "configuration": spec.configuration(ModelConfig.from_dict(arch)) or None,
            "checkpoint_sha256": config["weights"]["sha256"],
            "checkpoint_bytes": config["weights"]["bytes"],
            "weights_format": config["weights"]["format"],
            "training_steps": lineage_steps(config.get("provenance")),
            "training_balanced_share": training_balanced_share(config),
            "accuracy": {k: v["accuracy"] for k, v in evaluation.items()},
            "interpolate_accuracy": reliability.get("interpolate", {}).get("accuracy"),
            "reliability": reliability,
        })
        rows.append(row)
    return rows


def per_place_reliability(evaluation: dict, runtime: str = "torch", int8_kernel: str | None = None) -> dict:
    """{split: {evaluation, runtime, int8_kernel, accuracy, total, per_place: {place: accuracy}}} from the
    largest recorded evaluation of each of RELIABILITY_SPLITS, places in DeepMind's order; measured
    with the runtime that serves the backend where such a record exists (records without one are
    torch's), and for int8 on `int8_kernel`'s class where one was measured there."""
    out = {}
    for split in RELIABILITY_SPLITS:
        records = [(n, r) for n, r in evaluation.items() if evaluation_split(n, r) == split and r.get("per_place")]
        served = [(n, r) for n, r in records if r.get("runtime", "torch") == runtime]
        if runtime.endswith("int8"):
            served = [(n, r) for n, r in served if r.get("int8_kernel") == int8_kernel] or served
        if records:  # the largest, preferring the serving runtime's; the first of equals
            name, record = max(served or records, key=lambda item: item[1]["total"])
            places = [p for p in PLACE_NAMES if p in record["per_place"]]
            out[split] = {"evaluation": name, "runtime": record.get("runtime", "torch"),
                          "int8_kernel": record.get("int8_kernel"),
                          "accuracy": record["accuracy"], "total": record["total"],
                          "per_place": {p: record["per_place"][p]["accuracy"] for p in places},
                          "per_place_total": {p: record["per_place"][p]["total"] for p in places}}
    return out
