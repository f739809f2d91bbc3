"""DeepMind mathematics dataset, module `numbers__place_value` (Saxton et al., ICLR 2019).

Reproduces the generator's distribution without the `mathematics_dataset` package:
`What is the {place_name} digit of {integer}?` with integer uniform on
[1, ceil(10**entropy + 1)] and place uniform on [1, number of digits]. Train entropy is
uniform on [3, 10] (easy / medium / hard are its thirds), interpolate is fixed at 8 and
extrapolate (`place_value_big`) at 12. Files alternate lines: question, answer.
"""
import argparse
import functools
import math
import random
import re
from pathlib import Path

_FIRSTS = ("", "ten ", "hundred ")
_SECONDS = ("thousands", "millions", "billions", "trillions", "quadrillions", "quintillions",
            "sextillions", "septillions", "octillions", "nonillions", "decillions")
PLACE_NAMES = ("units", "tens", "hundreds") + tuple(f + s for s in _SECONDS for f in _FIRSTS)

TRAIN_ENTROPY = (3.0, 10.0)
_THIRD = (TRAIN_ENTROPY[1] - TRAIN_ENTROPY[0]) / 3
SPLITS = {
    "train": TRAIN_ENTROPY,
    "train-easy": (TRAIN_ENTROPY[0], TRAIN_ENTROPY[0] + _THIRD),
    "train-medium": (TRAIN_ENTROPY[0] + _THIRD, TRAIN_ENTROPY[0] + 2 * _THIRD),
    "train-hard": (TRAIN_ENTROPY[0] + 2 * _THIRD, TRAIN_ENTROPY[1]),
    "interpolate": (8.0, 8.0),
    "extrapolate": (12.0, 12.0),
}
QUESTION_RE = re.compile(r"^What is the (?P<place>[a-z ]+) digit of (?P<integer>\d+)\?$")


def place_value_example(rng: random.Random, entropy: float) -> tuple[str, str]:
    """One (question, answer) pair at the given entropy, as DeepMind's generator samples it."""
    integer = rng.randint(1, math.ceil(10 ** entropy + 1))
    digits = str(integer)
    place = rng.randint(1, len(digits))  # 1 = units
    question = f"What is the {PLACE_NAMES[place - 1]} digit of {integer}?"
    return question, digits[len(digits) - place]


def generate(split: str, n: int, seed: int) -> list[tuple[str, str]]:
    """`n` examples of a split, reproducible from `seed`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    low, high = SPLITS[split]
    rng = random.Random(seed)
    return [place_value_example(rng, rng.uniform(low, high)) for _ in range(n)]


CURRICULUM = ("train-easy", "train-medium", "train-hard")


def curriculum_split(step: int, phase_steps: int, final_split: str = "train") -> str:
    """The split step `step` draws from under a curriculum of DeepMind's thirds: `phase_steps`
    steps each of easy, medium and hard, then `final_split` (0 phase steps = no curriculum).
    A function of the step alone, so resumed runs see the same data."""
    if phase_steps > 0 and step < len(CURRICULUM) * phase_steps:
        return CURRICULUM[step // phase_steps]
    return final_split


def training_batch(seed: int, rank: int, index: int, batch_size: int, split: str = "train"):
    """Batch number `index` of a rank's stream: depends only on its arguments, so resuming
    at step N regenerates exactly the data an uninterrupted run would have seen."""
    return generate(split, batch_size, seed=f"train:{seed}:{rank}:{index}")


def bucketed_batch(seed: int, rank: int, index: int, batch_size: int, split: str = "train", pool: int = 8):
    """Batch `index` of the same stream regrouped by question length, to cut padding: the examples
    of `pool` consecutive batches are sorted by length and cut into `pool` batches, served in a
    seeded random order. Every example of the plain stream is seen once per pool, so the data
    distribution is unchanged; only which examples share a batch differs."""
    first = index - index % pool
    examples = _length_sorted_pool(seed, rank, first, batch_size, split, pool)
    order = random.Random(f"bucket:{seed}:{rank}:{first}").sample(range(pool), pool)
    start = order[index % pool] * batch_size
    return examples[start:start + batch_size]


@functools.lru_cache(maxsize=2)  # the pool is built once and read by its `pool` steps
def _length_sorted_pool(seed, rank, first, batch_size, split, pool) -> tuple:
    examples = [e for i in range(first, first + pool) for e in training_batch(seed, rank, i, batch_size, split)]
    return tuple(sorted(examples, key=lambda example: len(example[0])))


def place_of(question: str) -> str:
    """The place name a question asks for, or "other" for a question of another shape."""
    match = QUESTION_RE.match(question)
    return match.group("place") if match else "other"


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
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", required=True, help="output file, e.g. data/interpolate/numbers__place_value.txt")
    args = parser.parse_args(argv)
    write_examples(generate(args.split, args.n, args.seed), args.out)
    print(f"wrote {args.n} {args.split} examples (seed {args.seed}) to {args.out}")


if __name__ == "__main__":
    main()
