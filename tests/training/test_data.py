"""The generator reproduces DeepMind's numbers__place_value; the reader parses its files."""
import math
import random
from pathlib import Path

import pytest

from training import data
from models.task import PLACE_NAMES, SPLITS, generate, generate_beyond_digits, generate_place_balanced, place_of, place_value_example, support
from training.data import bucketed_batch, curriculum_split, main, read_examples, training_batch, write_examples

FIXTURES = Path(__file__).parent / "fixtures"


def test_place_names_follow_deepmind_table():
    assert PLACE_NAMES[:6] == ("units", "tens", "hundreds", "thousands", "ten thousands", "hundred thousands")
    assert PLACE_NAMES[9:12] == ("billions", "ten billions", "hundred billions")
    assert PLACE_NAMES[-1] == "hundred decillions" and len(PLACE_NAMES) == 36


@pytest.mark.parametrize("split", list(SPLITS))
def test_every_answer_is_the_right_digit(split):
    for question, answer in generate(split, 2000, seed=3):
        place, integer = place_of(question), int(question.split(" of ")[1].rstrip("?"))
        digits = str(integer)
        index = PLACE_NAMES.index(place)
        assert index < len(digits), f"place {place!r} beyond the digits of {integer}"
        assert answer == digits[len(digits) - 1 - index]
        assert len(question) <= 160 and len(answer) == 1


def test_entropy_ranges_match_deepmind():
    assert SPLITS["train"] == (3.0, 10.0)
    assert SPLITS["interpolate"] == (8.0, 8.0) and SPLITS["extrapolate"] == (12.0, 12.0)
    easy, medium, hard = SPLITS["train-easy"], SPLITS["train-medium"], SPLITS["train-hard"]
    assert easy[0] == 3.0 and math.isclose(easy[1], medium[0]) and math.isclose(medium[1], hard[0]) and hard[1] == 10.0
    extrapolated = [int(q.split(" of ")[1].rstrip("?")) for q, _ in generate("extrapolate", 3000, seed=1)]
    assert max(extrapolated) <= math.ceil(10 ** 12 + 1) and min(extrapolated) >= 1
    assert sum(len(str(n)) == 12 for n in extrapolated) > 2500, "uniform on [1, 1e12] is mostly 12 digits"
    interpolated = [int(q.split(" of ")[1].rstrip("?")) for q, _ in generate("interpolate", 3000, seed=1)]
    assert max(interpolated) <= 10 ** 8 + 1


def test_place_is_uniform_over_digits():
    rng = random.Random(0)
    counts = [0] * 3
    for _ in range(6000):
        question, _ = place_value_example(rng, entropy=2.6)  # integers of up to 3 digits, mostly 3
        if len(question.split(" of ")[1]) == 4:  # "NNN?"
            counts[PLACE_NAMES.index(place_of(question))] += 1
    assert min(counts) > 0.8 * max(counts)


def test_same_seed_same_data_and_batches_depend_on_index_only():
    assert generate("train", 50, seed=9) == generate("train", 50, seed=9)
    assert generate("train", 50, seed=9) != generate("train", 50, seed=10)
    assert training_batch(0, 0, 7, 16) == training_batch(0, 0, 7, 16)
    assert training_batch(0, 0, 7, 16) != training_batch(0, 1, 7, 16) != training_batch(0, 0, 8, 16)


def test_bucketing_regroups_the_same_examples_with_less_padding():
    pool, size = 8, 64
    for first in (0, 8):
        plain = [e for i in range(first, first + pool) for e in training_batch(0, 0, i, size)]
        buckets = [bucketed_batch(0, 0, i, size, pool=pool) for i in range(first, first + pool)]
        assert all(len(batch) == size for batch in buckets)
        assert sorted(e for batch in buckets for e in batch) == sorted(plain)  # same examples, each once

        def padded(batches):
            return sum(len(batches) * max(len(q) for q, _ in batches) for batches in batches)
        assert padded(buckets) < 0.9 * padded([plain[i:i + size] for i in range(0, len(plain), size)])
    # served in a shuffled order, not shortest first
    lengths = [max(len(q) for q, _ in bucketed_batch(0, 0, i, size, pool=pool)) for i in range(pool)]
    assert lengths != sorted(lengths)


def test_bucketed_batch_depends_on_its_arguments_only():
    """Resuming mid-pool (empty cache) must serve exactly what an uninterrupted run would."""
    want = [bucketed_batch(1, 0, i, 16, pool=4) for i in range(8)]
    data._length_sorted_pool.cache_clear()
    assert [bucketed_batch(1, 0, i, 16, pool=4) for i in (5, 6, 7)] == want[5:]
    assert bucketed_batch(1, 1, 5, 16, pool=4) != want[5]  # ranks draw different data


def test_reader_parses_deepmind_fixture_file_and_directory():
    pairs = read_examples(FIXTURES / "interpolate" / "numbers__place_value.txt")
    assert pairs[0] == ("What is the tens digit of 89290?", "9") and len(pairs) == 4
    everything = read_examples(FIXTURES)
    assert len(everything) == 6 and pairs[0] in everything


def test_reader_rejects_odd_files_and_missing_paths(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("What is the tens digit of 12?\n1\nWhat is the units digit of 3?\n")
    with pytest.raises(ValueError, match="odd number of lines"):
        read_examples(bad)
    with pytest.raises(ValueError, match="no such file"):
        read_examples(tmp_path / "missing.txt")


def test_writer_and_cli_round_trip(tmp_path, capsys):
    examples = generate("extrapolate", 20, seed=5)
    write_examples(examples, tmp_path / "a.txt")
    assert read_examples(tmp_path / "a.txt") == examples
    main(["--split", "interpolate", "--n", "30", "--seed", "4", "--out", str(tmp_path / "b" / "c.txt")])
    assert read_examples(tmp_path / "b" / "c.txt") == generate("interpolate", 30, seed=4)
    assert "wrote 30" in capsys.readouterr().out
    main(["--split", "train", "--n", "25", "--seed", "6", "--beyond-digits", "--out", str(tmp_path / "beyond.txt")])
    beyond = read_examples(tmp_path / "beyond.txt")
    assert beyond == generate_beyond_digits("train", 25, seed=6) and {a for _, a in beyond} == {"0"}
    assert "wrote 25 train beyond-the-digits" in capsys.readouterr().out


def test_curriculum_walks_easy_medium_hard_then_the_full_split():
    splits = [curriculum_split(step, 3, "train") for step in range(11)]
    assert splits == ["train-easy"] * 3 + ["train-medium"] * 3 + ["train-hard"] * 3 + ["train"] * 2
    assert {curriculum_split(step, 0, "train-easy") for step in range(50)} == {"train-easy"}  # 0 = off
    # each phase's questions really come from its third: easy numbers have at most 6 digits
    easy = [q for q, _ in generate(curriculum_split(0, 3), 500, seed=2)]
    hard = [q for q, _ in generate(curriculum_split(6, 3), 500, seed=2)]
    digits = lambda questions: max(len(q.split(" of ")[1].rstrip("?")) for q in questions)
    assert digits(easy) <= 6 < digits(hard)


def test_place_balanced_sampling_oversamples_rare_places_inside_the_support():
    examples = generate_place_balanced("train", 3000, seed=5)
    counts = {}
    for question, answer in examples:
        counts[place_of(question)] = counts.get(place_of(question), 0) + 1
        digits = question.split()[-1][:-1]
        assert len(digits) <= support("train").max_digits
        assert answer == digits[-PLACE_NAMES.index(place_of(question)) - 1]
    places = [p for p, s in support("train").place_share.items() if s > 1e-6]
    assert set(counts) == set(places)
    assert min(counts.values()) > 0.6 * 3000 / len(places), counts  # billions: ~1% -> ~10%


def test_balanced_share_replaces_part_of_the_batch_and_zero_changes_nothing():
    assert training_batch(1, 0, 7, 64) == training_batch(1, 0, 7, 64, balanced_share=0.0)
    mixed = training_batch(1, 0, 7, 64, balanced_share=0.25)
    assert len(mixed) == 64 and mixed[:48] == training_batch(1, 0, 7, 48)
    assert mixed == training_batch(1, 0, 7, 64, balanced_share=0.25), "reproducible, so resumable"


@pytest.mark.parametrize("balanced_share", [0.0, 0.5])
def test_the_training_stream_asks_every_place_of_the_support_as_often_as_it_should(balanced_share):
    """What the trainer actually draws (not only the generator) keeps every place name, the rare
    ones included, at its share of the support (or above it, when balanced sampling is on)."""
    counts, total = {}, 0
    for index in range(400):
        for question, _ in training_batch(0, 0, index, 64, "train", balanced_share):
            counts[place_of(question)] = counts.get(place_of(question), 0) + 1
            total += 1
    for place, share in support("train").place_share.items():
        if share < 1e-4:  # ten billions: two integers of the whole range
            continue
        seen = counts.get(place, 0) / total
        assert seen > 0.7 * share, (place, seen, share)
        if balanced_share == 0:
            assert abs(seen - share) < max(0.01, 0.25 * share), (place, seen, share)
    assert set(counts) <= set(PLACE_NAMES)


def test_a_share_of_each_batch_asks_beyond_the_numbers_digits():
    """--beyond-share: that share of every batch asks a place the number does not have (answer 0); the
    stream stays a function of its arguments, so a resumed run sees the same batches."""
    batch = training_batch(seed=1, rank=0, index=7, batch_size=40, beyond_share=0.25)
    beyond = [(q, a) for q, a in batch if PLACE_NAMES.index(place_of(q)) + 1 > len(q.rsplit(" ", 1)[1][:-1])]
    assert len(beyond) == 10 and all(a == "0" for _, a in beyond)
    assert batch == training_batch(seed=1, rank=0, index=7, batch_size=40, beyond_share=0.25)
    with pytest.raises(ValueError, match="exceed"):
        training_batch(seed=1, rank=0, index=7, batch_size=40, balanced_share=0.8, beyond_share=0.3)
