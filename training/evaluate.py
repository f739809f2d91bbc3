"""Exact-match evaluation of a checkpoint on DeepMind-format place-value files.

    python -m training.evaluate --checkpoint checkpoints/memsizer --data FILE_OR_DIR [--json]

Reports accuracy overall and per place name (units, tens, ..., hundred decillions).
`--record NAME` also stores the result in the checkpoint's config.json under "evaluation".
"""
import argparse
import json
import logging
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from models.checkpoint import CONFIG_FILE, CheckpointError, load_checkpoint, read_config, write_json
from models.runtimes import DEVICES, RUNTIMES, evaluation_split, kernel_class, resolve_device, start_runtime
from models.tokenizer import pad_batch
from models.task import PLACE_NAMES, place_of
from training.data import read_examples

log = logging.getLogger(__name__)


def predict(model, tokenizer, questions, batch_size=256, device="cpu", engine=None) -> list[str]:
    """Greedy answers for `questions`, batched by similar length to cut padding; from `engine`
    (a runner of models.runtimes) instead of the torch model when one is given."""
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]))
    answers = [""] * len(questions)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids = [tokenizer.encode(questions[i]) for i in chunk]
            if engine is not None:
                answers_here = engine.answer_ids(ids)
            else:
                answers_here = [tokenizer.decode(row) for row in model.generate(pad_batch(ids).to(device)).tolist()]
            for i, answer in zip(chunk, answers_here):
                answers[i] = answer
    return answers


def evaluate_examples(model, tokenizer, examples, batch_size=256, device="cpu", engine=None) -> dict:
    """Exact-match accuracy overall and per place name."""
    start = time.perf_counter()
    predictions = predict(model, tokenizer, [q for q, _ in examples], batch_size, device, engine)
    seconds = time.perf_counter() - start
    hits, counts = defaultdict(int), defaultdict(int)
    for (question, answer), predicted in zip(examples, predictions):
        place = place_of(question)
        counts[place] += 1
        hits[place] += predicted == answer
    rank = {name: i for i, name in enumerate(PLACE_NAMES)}
    per_place = {p: {"correct": hits[p], "total": counts[p], "accuracy": hits[p] / counts[p]}
                 for p in sorted(counts, key=lambda p: rank.get(p, len(rank)))}
    correct, total = sum(hits.values()), len(examples)
    return {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total,
            "per_place": per_place, "seconds": seconds,
            "examples_per_second": total / seconds if seconds > 0 else None}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score 95% interval of a share (None for no observations)."""
    if not n:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def record_evaluation(checkpoint, name: str, split: str | None, result: dict) -> dict:
    """Store `result` (evaluate_examples' plus data, weights_sha256 and runtime) in the checkpoint's
    config.json under evaluation.`name`; the record."""
    stored = read_config(checkpoint)
    record = {"split": split, **{k: result[k] for k in ("data", "accuracy", "correct", "total", "per_place",
                                                         "weights_sha256", "runtime")},
              **({"int8_kernel": result["int8_kernel"]} if "int8_kernel" in result else {})}
    stored.setdefault("evaluation", {})[name] = record
    write_json(Path(checkpoint) / CONFIG_FILE, stored)
    return record


def format_report(result: dict) -> str:
    lines = [f"{result['model']}: {result['correct']}/{result['total']} correct, "
             f"accuracy {result['accuracy']:.4%} ({result['examples_per_second']:.0f} questions/s)"]
    for place, row in result["per_place"].items():
        lines.append(f"  {place:<22} {row['correct']:>6}/{row['total']:<6} {row['accuracy']:.4%}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on DeepMind-format files.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="DeepMind-format file or a directory of them")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--record", metavar="NAME", help="store the result in config.json under evaluation.NAME")
    parser.add_argument("--split", choices=["interpolate", "train", "extrapolate", "beyond"], default=None,
                        help="the distribution the data comes from, stored with --record (the page's per-place "
                             "charts group evaluations by it; beyond: places beyond the numbers' digits; "
                             "default: the split NAME starts with)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="answer with a serving runtime (models/runtimes; int8 answers are recorded with this "
                             "CPU's int8 kernel class)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        device = resolve_device(args.device)
        model, tokenizer, config = load_checkpoint(args.checkpoint, device=device)
        examples = read_examples(args.data)
        engine = None if args.runtime == "torch" else start_runtime(model, tokenizer, args.runtime, device,
                                                                    torch.get_num_threads())
    except (CheckpointError, ValueError) as err:
        sys.exit(f"error: {err}")
    result = {"model": config["model"], "checkpoint": str(args.checkpoint), "data": str(args.data),
              "weights_sha256": config["weights"]["sha256"], "runtime": args.runtime,
              **evaluate_examples(model, tokenizer, examples, args.batch_size, device, engine)}
    if args.runtime.endswith("int8"):  # int8 answers depend on the CPU's kernel class
        result["int8_kernel"] = kernel_class(device)
    if args.record:
        record_evaluation(args.checkpoint, args.record, args.split or evaluation_split(args.record, {}), result)
    print(json.dumps(result, indent=2) if args.json else format_report(result))


if __name__ == "__main__":
    main()
