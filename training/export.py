"""Re-store a checkpoint in another weights format (e.g. float32 or int8 -> int4 groups).

    python -m training.export --checkpoint runs/performer/checkpoint --out checkpoints/performer --weights-format int4

Provenance and training report carry over, with a note of the files they were converted from.
Evaluations do not: they judged other files. Re-run `training.evaluate --record` on the output;
the service shows only what was measured on the files it serves.
"""
import argparse
import shutil
from pathlib import Path

from models.checkpoint import GROUP_SIZE, WEIGHT_FORMATS, load_checkpoint, save_checkpoint


def add_group_size_flag(parser: argparse.ArgumentParser) -> None:
    """--group-size, shared by training.train and training.export."""
    parser.add_argument("--group-size", type=int, default=GROUP_SIZE,
                        help="int4 only: values per group sharing one scale and minimum (smaller: closer to "
                             "the float weights, 32 bits more per group)")


def check_group_size(parser: argparse.ArgumentParser, args) -> None:
    if args.group_size < 1:
        parser.error("--group-size must be at least 1")


def export(source, out, weights_format: str, group_size: int = GROUP_SIZE) -> dict:
    model, tokenizer, config = load_checkpoint(source)
    provenance = dict(config.get("provenance", {}))
    provenance.setdefault("converted_from", []).append(
        {"format": config["weights"]["format"], "sha256": config["weights"]["sha256"]})
    out = Path(out)
    stored = save_checkpoint(model, out, tokenizer, weights_format, extra={"provenance": provenance},
                             group_size=group_size)
    report = Path(source) / "training_report.json"
    if report.is_file() and report.resolve() != (out / report.name).resolve():
        shutil.copyfile(report, out / report.name)
    return stored


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory to read")
    parser.add_argument("--out", required=True, help="directory to write (may be the same)")
    parser.add_argument("--weights-format", choices=WEIGHT_FORMATS, default="int4")
    add_group_size_flag(parser)
    args = parser.parse_args(argv)
    check_group_size(parser, args)
    stored = export(args.checkpoint, args.out, args.weights_format, args.group_size)
    print(f"{args.out}: {stored['weights']['format']}, {stored['weights']['bytes']:,} bytes, "
          f"sha256 {stored['weights']['sha256'][:12]}; re-run training.evaluate --record on it")


if __name__ == "__main__":
    main()
