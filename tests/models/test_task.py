"""The exact-answer check and the training-distribution limits, derived from the sampler."""
import random

import pytest

from models.task import (PLACE_NAMES, QUESTION_RE, RARE_SHARE, assess, generate, generate_place_balanced, place_of,
                         place_value_example, support)

LONG = "1" + "0" * 40


@pytest.mark.parametrize("question, expected, codes", [
    ("What is the tens digit of 89290?", "9", []),
    ("What is the units digit of 7?", "7", []),  # 1-digit numbers
    ("What is the units digit of 0?", "0", []),
    ("What is the tens digit of 7?", "0", ["place_beyond_number"]),
    ("What is the hundreds digit of 7?", "0", ["place_beyond_number"]),
    ("What is the tens digit of 007?", "0", ["leading_zeros", "place_beyond_number"]),
    ("What is the units digit of 0012?", "2", ["leading_zeros"]),
    ("What is the thousands digit of 0012?", "0", ["leading_zeros", "place_beyond_number"]),
    ("What is the billions digit of 98765432101?", "8", ["number_too_long", "place_rare"]),
    ("What is the billions digit of 9876543210?", "9", ["place_rare"]),
    ("What is the hundred millions digit of 987654321?", "9", ["place_rare"]),
    ("What is the ten millions digit of 987654321?", "8", []),
    ("What is the ten billions digit of 98765432101?", "9", ["number_too_long", "place_unseen"]),
    ("What is the hundreds digit of 123456789012?", "0", ["number_too_long"]),
    (f"What is the units digit of {LONG}?", "0", ["number_too_long"]),
    ("What is the hundred decillions digit of 1" + "0" * 35 + "?", "1", ["number_too_long", "place_unseen"]),
    (f"What is the hundred decillions digit of {LONG}?", "0", ["number_too_long", "place_unseen"]),
    ("What is the hundred decillions digit of 5?", "0", ["place_unseen", "place_beyond_number"]),
    ("What  is the tens digit of 12?", "1", ["irregular_wording"]),
    (" What is the tens digit of 12 ? ", "1", ["irregular_wording"]),
    ("what is the TENS digit of 12?", "1", ["irregular_wording"]),
    ("What is the ten  thousands digit of 12345?", "1", ["irregular_wording"]),
    ("What is the tens digit of 12", None, ["not_task_form"]),
    ("What is the tens digit of -12?", None, ["not_task_form"]),
    ("What is the tens digit of 1.5?", None, ["not_task_form"]),
    ("What is the tens digit of twelve?", None, ["not_task_form"]),
    ("hello there", None, ["not_task_form"]),
    ("What is the zillions digit of 12?", None, ["unknown_place_name"]),
    ("What is the thousand digit of 12345?", None, ["unknown_place_name"]),
])
def test_check_table(question, expected, codes):
    result = assess(question)
    assert result.expected == expected
    assert [r.code for r in result.reasons] == codes
    check = result.check(expected or "x")
    assert check["in_distribution"] is (not codes)
    assert check["correct"] is (None if expected is None else True)


@pytest.mark.parametrize("place", range(1, len(PLACE_NAMES) + 1))
def test_every_place_name_against_integer_arithmetic(place):
    integer = random.Random(place).randint(10 ** 40, 10 ** 41)
    question = f"What is the {PLACE_NAMES[place - 1]} digit of {integer}?"
    assert assess(question).expected == str(integer // 10 ** (place - 1) % 10)


def test_generated_questions_are_checked_right_and_training_questions_are_in_distribution():
    rng = random.Random(0)
    for _ in range(2000):
        question, answer = place_value_example(rng, rng.uniform(3, 10))
        result = assess(question)
        assert result.expected == answer
        # the only reason a training question may carry: its place is rarely asked
        assert {r.code for r in result.reasons} <= {"place_rare"}
    for question, answer in generate("extrapolate", 200, seed=1):
        assert assess(question).expected == answer
        digits = question.rsplit(" ", 1)[1][:-1]
        assert ("number_too_long" in {r.code for r in assess(question).reasons}) == (len(digits) > 10)


def test_support_matches_sampled_frequencies():
    train = support("train")
    assert train.max_digits == 10
    assert abs(sum(train.place_share.values()) - 1) < 1e-6 and abs(sum(train.length_share.values()) - 1) < 1e-6
    counts = {}
    for question, _ in generate("train", 40_000, seed=3):
        place = question.split(" digit")[0][len("What is the "):]
        counts[place] = counts.get(place, 0) + 1
    for place, share in train.place_share.items():
        assert abs(counts.get(place, 0) / 40_000 - share) < 0.01, place
    rare = [p for p, share in train.place_share.items() if share < RARE_SHARE]
    assert rare == ["hundred millions", "billions", "ten billions"]
    assert support("interpolate").max_digits == 8  # 100000000 and 100000001 only: effectively never


def test_support_under_place_balanced_batches_matches_training_mix():
    """The shares the answer check quotes for a model trained with half its batches place-balanced."""
    mixed = support("train", balanced_share=0.5)
    sample = generate("train", 10_000, seed=4) + generate_place_balanced("train", 10_000, seed=5)
    places, lengths = {}, {}
    for question, _ in sample:
        places[place_of(question)] = places.get(place_of(question), 0) + 1
        digits = len(question.rsplit(" ", 1)[1][:-1])
        lengths[digits] = lengths.get(digits, 0) + 1
    for place, share in mixed.place_share.items():
        assert abs(places.get(place, 0) / len(sample) - share) < 0.01, place
    for digits, share in mixed.length_share.items():
        assert abs(lengths.get(digits, 0) / len(sample) - share) < 0.01, digits
    assert mixed.max_digits == 10 and min(s for s in mixed.place_share.values() if s > 0) > RARE_SHARE
    # the same billions question is rare for DeepMind's sampler, not for the balanced recipe
    question = "What is the billions digit of 4123456789?"
    assert "place_rare" in {r.code for r in assess(question).reasons}
    assert assess(question, balanced_share=0.5).reasons == ()
    with pytest.raises(ValueError):
        support("train", balanced_share=1.5)


@pytest.mark.parametrize("typed, trained", [
    ("what is the tens digit of 89,290?", "What is the tens digit of 89290?"),
    ("  WHAT is  the Ten   Thousands digit of 12345 ? ", "What is the ten thousands digit of 12345?"),
    ("What is the units digit of 1,234,567?", "What is the units digit of 1234567?"),
    ("What is the tens digit of 89290?", "What is the tens digit of 89290?"),
    # what cannot be mapped stays as typed, for the check to flag
    ("What is the tens digit of 89,29?", "What is the tens digit of 89,29?"),
    ("What is the dozens digit of 12?", "What is the dozens digit of 12?"),
    ("How many tens in 12?", "How many tens in 12?"),
])
def test_wording_is_normalised_to_the_trained_form(typed, trained):
    from models.task import normalise_question
    assert normalise_question(typed) == trained
    if trained != typed:
        assert QUESTION_RE.match(trained) and assess(trained).reasons == ()


def test_questions_beyond_a_numbers_digits_ask_trained_places_above_its_length():
    from models.task import asked_places, generate_beyond_digits
    examples = generate_beyond_digits("train", 300, seed=3)
    assert len(examples) == 300 and all(answer == "0" for _, answer in examples)
    for question, _ in examples:
        place, number = place_of(question), question.rsplit(" ", 1)[1][:-1]
        assert place in asked_places("train") and PLACE_NAMES.index(place) + 1 > len(number), question
        assert assess(question).expected == "0" and assess(question, 0.5, beyond_share=0.1).reasons == ()
    assert "place_beyond_number" in [r.code for r in assess(examples[0][0]).reasons]
    # taught, but its stored file measured below 99% on them: still warned, with the measured share
    [reason] = assess(examples[0][0], 0.5, beyond_share=0.1, beyond_accuracy=0.113).reasons
    assert reason.code == "place_beyond_number" and "this model answers 11% of such questions" in reason.message
    assert assess(examples[0][0], 0.5, beyond_share=0.1, beyond_accuracy=0.997).reasons == ()


def test_the_measured_beyond_accuracy_is_that_of_the_files_served():
    from serving.catalog import measured_beyond_accuracy
    record = lambda sha, correct, total: {"split": "beyond", "weights_sha256": sha, "accuracy": correct / total,
                                          "correct": correct, "total": total}
    config = {"weights": {"sha256": "new"}, "evaluation": {
        "beyond_small": record("new", 10, 10), "beyond_1k": record("new", 113, 1000), "old": record("old", 0, 5000),
        "interpolate": {"split": "interpolate", "weights_sha256": "new", "accuracy": 1.0, "total": 9000}}}
    assert measured_beyond_accuracy(config) == 0.113  # the largest record of these weights
    assert measured_beyond_accuracy({"weights": {"sha256": "x"}, "evaluation": {}}) is None
    assert measured_beyond_accuracy(None) is None
