"""Ship a candidate checkpoint in place of the shipped one only when it is better, judged from both
checkpoints' stored files on the same fresh questions.

    python -m training.promote --candidate runs/finetune/performer/checkpoint [--shipped checkpoints/performer]
                               [--dry-run]

Both checkpoints are evaluated on the fixed sets below (written to --data-dir as `make data` writes
them, and recorded in each config.json; a record already there for the same weights is reused).
The candidate replaces the shipped checkpoint when
  - every place of the training distribution answers at least 99.9% of its 1,000 questions, and
  - on 12-digit numbers and on places beyond a number's digits it is nowhere worse than the shipped
    checkpoint beyond sampling error (Wilson 95% intervals), and better beyond it somewhere.
"""
import argparse
import json
import logging
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from models.checkpoint import CheckpointError, load_checkpoint, read_config, write_json
from models.task import generate, generate_beyond_digits, generate_per_place
from training.data import read_examples, write_examples
from training.evaluate import evaluate_examples, record_evaluation, wilson
from training.recipe import recipe_command

log = logging.getLogger("training.promote")
TRAINED_PLACE_FLOOR = 0.999
# record name: (split, file under --data-dir, the questions); the first three are those the shipped
# checkpoints have carried since they were first evaluated
EVALUATION_SETS = {
    "train_per_place_1000_seed780": ("train", "train_per_place_1000/numbers__place_value.txt",
                                     lambda: generate_per_place("train", 1000, 780)),
    "interpolate_10k_seed777": ("interpolate", "interpolate/numbers__place_value.txt",
                                lambda: generate("interpolate", 10000, 777)),
    "extrapolate_10k_seed778": ("extrapolate", "extrapolate/numbers__place_value_big.txt",
                                lambda: generate("extrapolate", 10000, 778)),
    "beyond_1k_seed781": ("beyond", "beyond/numbers__place_value_beyond.txt",
                          lambda: generate_beyond_digits("train", 1000, 781)),
}
TRAINED_PLACES, COMPARED = "train_per_place_1000_seed780", ("extrapolate_10k_seed778", "beyond_1k_seed781")


def evaluate_checkpoint(directory, data_dir, sets=EVALUATION_SETS) -> dict:
    """{record name: record} for every set, evaluated from the stored files where config.json holds no
    torch record of them for these weights."""
    model = tokenizer = None
    for name, (split, file, questions) in sets.items():
        config = read_config(directory)
        record = config.get("evaluation", {}).get(name)
        if record and record.get("weights_sha256") == config["weights"]["sha256"] \
                and record.get("runtime", "torch") == "torch":
            continue
        path = Path(data_dir) / file
        if not path.is_file():
            write_examples(questions(), path)
        if model is None:
            model, tokenizer, _ = load_checkpoint(directory)  # verifies the digest of what is judged
        result = evaluate_examples(model, tokenizer, read_examples(path))
        log.info("%s: %s %.4f", directory, name, result["accuracy"])
        record_evaluation(directory, name, split,
                          {**result, "data": str(Path(data_dir) / Path(file).parent),
                           "weights_sha256": config["weights"]["sha256"], "runtime": "torch"})
    return {name: read_config(directory)["evaluation"][name] for name in sets}


def judge(candidate: dict, shipped: dict) -> tuple[bool, list[str]]:
    """(whether the candidate replaces the shipped checkpoint, the reasons), from both checkpoints'
    records of EVALUATION_SETS."""
    reasons, better = [], False
    worst_place, worst = min(((p, r["accuracy"]) for p, r in candidate[TRAINED_PLACES]["per_place"].items()),
                             key=lambda item: item[1])
    keeps_training = worst >= TRAINED_PLACE_FLOOR
    reasons.append(f"worst trained place {worst_place} {worst:.2%} "
                   f"({'at or above' if keeps_training else 'below'} {TRAINED_PLACE_FLOOR:.1%})")
    worse = False
    for name in COMPARED:
        new, old = candidate[name], shipped[name]
        new_low, new_high = wilson(new["correct"], new["total"])
        old_low, old_high = wilson(old["correct"], old["total"])
        verdict = "better" if new_low > old_high else "worse" if new_high < old_low else "within sampling error"
        better |= verdict == "better"
        worse |= verdict == "worse"
        reasons.append(f"{name}: {new['accuracy']:.2%} [{new_low:.1%}-{new_high:.1%}] against "
                       f"{old['accuracy']:.2%} [{old_low:.1%}-{old_high:.1%}], {verdict}")
    return keeps_training and better and not worse, reasons


def replace(shipped: Path, candidate: Path) -> None:
    """Swap the candidate's files in for the shipped directory's (a copy of the candidate, renamed
    into place, so the service never sees half a checkpoint)."""
    incoming, outgoing = shipped.with_name(f".{shipped.name}.incoming"), shipped.with_name(f".{shipped.name}.old")
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.rmtree(outgoing, ignore_errors=True)
    shutil.copytree(candidate, incoming)
    shipped.rename(outgoing)
    incoming.rename(shipped)
    shutil.rmtree(outgoing)


def summary(directory, records: dict) -> dict:
    """What a judgement log keeps of one checkpoint: its weights, recipe and records in brief."""
    config = read_config(directory)
    return {"weights_sha256": config["weights"]["sha256"], "format": config["weights"]["format"],
            "bytes": config["weights"]["bytes"], "recipe": recipe_command(config["model"], config),
            "records": {name: {"accuracy": r["accuracy"], "correct": r["correct"], "total": r["total"],
                               "worst_place": min(p["accuracy"] for p in r["per_place"].values())}
                        for name, r in records.items()}}


def log_judgement(path, backend: str, candidate: dict, shipped: dict, reasons: list, verdict: str) -> None:
    """Append the judgement to a JSON file of them (one entry per candidate's weights, the latest kept)."""
    path = Path(path)
    entries = json.loads(path.read_text())["judgements"] if path.is_file() else []
    entries = [e for e in entries if e["candidate"]["weights_sha256"] != candidate["weights_sha256"]]
    entries.append({"backend": backend, "verdict": verdict, "reasons": reasons, "candidate": candidate,
                    "shipped": shipped, "judged": datetime.now(timezone.utc).isoformat(timespec="minutes")})
    write_json(path, {"judgements": entries})


def main(argv=None):
    parser = argparse.ArgumentParser(description="Replace a shipped checkpoint by a better candidate.")
    parser.add_argument("--candidate", required=True, help="checkpoint directory of the new model")
    parser.add_argument("--shipped", default=None, help="the checkpoint it would replace (default checkpoints/<model>)")
    parser.add_argument("--data-dir", default="data", help="where the evaluation sets are written and read")
    parser.add_argument("--dry-run", action="store_true", help="evaluate and judge, replace nothing")
    parser.add_argument("--log", default=None, help="append the judgement to this JSON file (e.g. "
                        "benchmarks/results/promotions.json, which the report shows)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        backend = read_config(args.candidate)["model"]
        shipped = Path(args.shipped or f"checkpoints/{backend}")
        if read_config(shipped)["model"] != backend:
            raise CheckpointError(f"{shipped} holds a {read_config(shipped)['model']} model, the candidate a {backend}")
        results = {which: evaluate_checkpoint(path, args.data_dir, EVALUATION_SETS)
                   for which, path in (("candidate", args.candidate), ("shipped", shipped))}
    except (CheckpointError, KeyError, ValueError) as err:
        sys.exit(f"error: {err}")
    promoted, reasons = judge(results["candidate"], results["shipped"])
    print("\n".join(f"  {reason}" for reason in reasons))
    verdict = "replaced" if promoted and not args.dry_run else "would replace" if promoted else "kept"
    if args.log:  # before the swap: the shipped side is the checkpoint judged against
        log_judgement(args.log, backend, summary(args.candidate, results["candidate"]),
                      summary(shipped, results["shipped"]), reasons, verdict)
    if promoted and not args.dry_run:
        replace(shipped, Path(args.candidate))
    print(f"{backend}: {verdict} {shipped}")


if __name__ == "__main__":
    main()
