"""Training data for DeepMind's `numbers__place_value` (the task itself: `models.task`):
resumable training streams, DeepMind's file format (lines alternate: question, answer) and a
command that writes generated splits in it.
"""
import argparse
import functools
import random
from pathlib import Path

from models.task import SPLITS, generate, generate_beyond_digits, generate_per_place, generate_place_balanced

CURRICULUM = ("train-easy", "train-medium", "train-hard")


def curriculum_split(step: int, phase_steps: int, final_split: str = "train") -> str:
    """The split step `step` draws from under a curriculum of DeepMind's thirds: `phase_steps`
    steps each of easy, medium and hard, then `final_split` (0 phase steps = no curriculum).
    A function of the step alone, so resumed runs see the same data."""
    if phase_steps > 0 and step < len(CURRICULUM) * phase_steps:
        return CURRICULUM[step // phase_steps]
    return final_split


def training_batch(seed: int, rank: int, index: int, batch_size: int, split: str = "train",
                   balanced_share: float = 0.0, beyond_share: float = 0.0):
    """Batch number `index` of a rank's stream: depends only on its arguments, so resuming
    at step N regenerates exactly the data an uninterrupted run would have seen.
    `balanced_share` of the batch is drawn with place names uniform (within the split's support),
    `beyond_share` asks places beyond the number's digits (answer 0); the rest is DeepMind's sampler."""
    balanced, beyond = round(batch_size * balanced_share), round(batch_size * beyond_share)
    if balanced + beyond > batch_size:
        raise ValueError(f"balanced_share {balanced_share} + beyond_share {beyond_share} exceed the whole batch")
    batch = generate(split, batch_size - balanced - beyond, seed=f"train:{seed}:{rank}:{index}")
    if balanced:
        batch += generate_place_balanced(split, balanced, seed=f"balanced:{seed}:{rank}:{index}")
    if beyond:
        batch += generate_beyond_digits(split, beyond, seed=f"beyond:{seed}:{rank}:{index}")
    return batch


def bucketed_batch(seed: int, rank: int, index: int, batch_size: int, split: str = "train", pool: int = 8,
                   balanced_share: float = 0.0, beyond_share: float = 0.0):
    """Batch `index` of the same stream regrouped by question length, to cut padding: the examples
    of `pool` consecutive batches are sorted by length and cut into `pool` batches, served in a
    seeded random order. Every example of the plain stream is seen once per pool, so the data
    distribution is unchanged; only which examples share a batch differs."""
    first = index - index % pool
    examples = _length_sorted_pool(seed, rank, first, batch_size, split, pool, balanced_share, beyond_share)
    order = random.Random(f"bucket:{seed}:{rank}:{first}").sample(range(pool), pool)
    start = order[index % pool] * batch_size
    return examples[start:start + batch_size]


@functools.lru_cache(maxsize=2)  # the pool is built once and read by its `pool` steps
def _length_sorted_pool(seed, rank, first, batch_size, split, pool, balanced_share=0.0, beyond_share=0.0) -> tuple:
    examples = [e for i in range(first, first + pool)
                for e in training_batch(seed, rank, i, batch_size, split, balanced_share, beyond_share)]
    return tuple(sorted(examples, key=lambda example: len(example[0])))


def data_files(path) -> list[Path]:
    """The DeepMind-format files at `path`: the file itself, or a directory's place-value files
    (`*place_value*.txt`, all `*.txt` if there are none), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob("*place_value*.txt")) or sorted(path.rglob("*.txt"))
        if files:
            return files
        raise ValueError(f"{path}: directory holds no .txt files")
    raise ValueError(f"{path}: no such file or directory")


def read_examples(path) -> list[tuple[str, str]]:
    """(question, answer) pairs from a DeepMind-format file or directory (alternating lines)."""
    examples = []
    for file in data_files(path):
        lines = file.read_text(encoding="utf-8").splitlines()
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 2:
            raise ValueError(f"{file}: odd number of lines ({len(lines)}); expected question/answer pairs")
        examples.extend(zip(lines[0::2], lines[1::2]))
    return examples


def write_examples(examples, path) -> None:
    """Write pairs in DeepMind's format: question line, answer line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for question, answer in examples:
            f.write(f"{question}\n{answer}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write generated place-value questions in DeepMind's file format.")
    parser.add_argument("--split", choices=list(SPLITS), default="interpolate")
    parser.add_argument("--n", type=int, default=10000, help="number of question/answer pairs")
    parser.add_argument("--per-place", type=int, default=None,
                        help="instead of --n: this many pairs of every place name the split asks, from its sampler")
    parser.add_argument("--beyond-digits", action="store_true",
                        help="instead: --n questions asking a place beyond the number's digits (answer 0), "
                             "numbers from the split's sampler")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", required=True, help="output file, e.g. data/interpolate/numbers__place_value.txt")
    args = parser.parse_args(argv)
    if args.beyond_digits:
        examples, kind = generate_beyond_digits(args.split, args.n, args.seed), f"{args.split} beyond-the-digits"
    elif args.per_place:
        examples, kind = generate_per_place(args.split, args.per_place, args.seed), args.split
    else:
        examples, kind = generate(args.split, args.n, args.seed), args.split
    write_examples(examples, args.out)
    print(f"wrote {len(examples)} {kind} examples (seed {args.seed}) to {args.out}")


if __name__ == "__main__":
    main()
