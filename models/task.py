"""The task: DeepMind mathematics dataset, module `numbers__place_value` (Saxton et al., ICLR 2019).

Reproduces the generator's distribution without the `mathematics_dataset` package:
`What is the {place_name} digit of {integer}?` with integer uniform on
[1, ceil(10**entropy + 1)] and place uniform on [1, number of digits]. Train entropy is
uniform on [3, 10] (easy / medium / hard are its thirds), interpolate is fixed at 8 and
extrapolate (`place_value_big`) at 12.

It also checks any question against the task: the exact answer computed in code, and the
reasons a question lies outside what the training distribution asks, with the digit counts
and place-name frequencies derived from the sampler itself.
"""
import functools
import math
import random
import re
from dataclasses import dataclass, field

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
# what a person may type that still means the task's question: any case, any runs of spaces
_LOOSE_PREFIX = r"^\s*what\s+is\s+the\s+(?P<place>[a-z]+(?:\s+[a-z]+)*)\s+digit\s+of\s+"
_LOOSE_QUESTION_RE = re.compile(_LOOSE_PREFIX + r"(?P<integer>[0-9]+)\s*\?\s*$", re.IGNORECASE)
# the same, the number's digits perhaps grouped by thousands separators ("89,290"): what normalising maps
_LOOSE_GROUPED_RE = re.compile(_LOOSE_PREFIX + r"(?P<integer>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)\s*\?\s*$",
                               re.IGNORECASE)

# A place name asked in under this share of training questions is "rare" (with DeepMind's sampler
# alone billions: 0.87%, hundred millions: 2.4%, ten millions: 4.2%; with half of every batch
# place-balanced, the adopted recipe, every asked place gets >= 5%); under UNSEEN_SHARE it is
# effectively never asked.
RARE_SHARE = 0.03
UNSEEN_SHARE = 1e-6


def place_value_example(rng: random.Random, entropy: float) -> tuple[str, str]:
    """One (question, answer) pair at the given entropy, as DeepMind's generator samples it."""
    integer = rng.randint(1, math.ceil(10 ** entropy + 1))
    digits = str(integer)
    place = rng.randint(1, len(digits))  # 1 = units
    question = f"What is the {PLACE_NAMES[place - 1]} digit of {integer}?"
    return question, digits[len(digits) - place]


def generate(split: str, n: int, seed) -> list[tuple[str, str]]:
    """`n` examples of a split, reproducible from `seed`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    low, high = SPLITS[split]
    rng = random.Random(seed)
    return [place_value_example(rng, rng.uniform(low, high)) for _ in range(n)]


def asked_places(split: str) -> list[str]:
    """The place names the split asks (in more than UNSEEN_SHARE of its questions), units first."""
    return [p for p, share in support(split).place_share.items() if share >= UNSEEN_SHARE]


def generate_per_place(split: str, per_place: int, seed) -> list[tuple[str, str]]:
    """`per_place` examples of every place name the split asks (in more than UNSEEN_SHARE of its
    questions), drawn from the split's own sampler and kept by place: the split's distribution
    within each place, with rare places as well measured as common ones."""
    wanted = dict.fromkeys(asked_places(split), per_place)
    low, high = SPLITS[split]
    rng, kept = random.Random(seed), []
    while any(wanted.values()):
        question, answer = place_value_example(rng, rng.uniform(low, high))
        place = place_of(question)
        if wanted.get(place):
            wanted[place] -= 1
            kept.append((question, answer))
    return kept


def generate_place_balanced(split: str, n: int, seed) -> list[tuple[str, str]]:
    """`n` examples whose place names are uniform over the places the split asks: each draws a
    place, then takes the split's own sampler's first example that asks it. Only the weights
    change: every example is one the split can ask (rare places and long numbers come up more)."""
    places = asked_places(split)
    low, high = SPLITS[split]
    rng, kept = random.Random(seed), []
    for _ in range(n):
        wanted = rng.choice(places)
        while True:
            question, answer = place_value_example(rng, rng.uniform(low, high))
            if place_of(question) == wanted:
                kept.append((question, answer))
                break
    return kept


def generate_beyond_digits(split: str, n: int, seed) -> list[tuple[str, str]]:
    """`n` questions that ask a place beyond the number's digits (answer 0), as people ask them and
    DeepMind's sampler never does: the number from the split's sampler, the place uniform over the
    split's asked places above the number's length (numbers as long as the longest asked place are
    redrawn)."""
    places = asked_places(split)
    low, high = SPLITS[split]
    rng, kept = random.Random(seed), []
    while len(kept) < n:
        integer = rng.randint(1, math.ceil(10 ** rng.uniform(low, high) + 1))
        length = len(str(integer))
        if length < len(places):
            place = rng.randint(length + 1, len(places))
            kept.append((f"What is the {PLACE_NAMES[place - 1]} digit of {integer}?", "0"))
    return kept


def place_of(question: str) -> str:
    """The place name a question asks for, or "other" for a question of another shape."""
    match = QUESTION_RE.match(question)
    return match.group("place") if match else "other"


@dataclass(frozen=True)
class Support:
    """What a split's sampler can ask: the share of questions per number length and per place."""

    length_share: dict  # digits -> share of questions
    place_share: dict  # place name -> share of questions

    @property
    def max_digits(self) -> int:
        return max(n for n, share in self.length_share.items() if share >= UNSEEN_SHARE)


@functools.cache
def support(split: str = "train", grid: int = 4000, balanced_share: float = 0.0) -> Support:
    """Exact shares under the sampler, integrated over the split's entropy range on a fine grid.
    With `balanced_share` b, training's mix (training.data.batch_examples): a share b of questions
    drawn place-balanced (generate_place_balanced: the place uniform over the split's asked places,
    the number from the split's sampler given that place), the rest from the sampler itself."""
    if not 0.0 <= balanced_share <= 1.0:
        raise ValueError(f"balanced_share must lie in [0, 1], got {balanced_share}")
    low, high = SPLITS[split]
    max_len = len(str(math.ceil(10 ** high + 1)))
    # joint[n][p]: share of questions with an n-digit number asking place p (1 = units)
    joint = [[0.0] * (max_len + 1) for _ in range(max_len + 1)]
    points = [low + (high - low) * (i + 0.5) / grid for i in range(grid)] if high > low else [low]
    for entropy in points:
        top = math.ceil(10 ** entropy + 1)  # integers are uniform on [1, top]
        for n in range(1, max_len + 1):
            count = max(0, min(top, 10 ** n - 1) - 10 ** (n - 1) + 1)  # n-digit integers in range
            for place in range(1, n + 1):  # the place is uniform over the number's digits
                joint[n][place] += count / top / n / len(points)
    places = [sum(joint[n][p] for n in range(1, max_len + 1)) for p in range(max_len + 1)]
    asked = [p for p in range(1, max_len + 1) if places[p] >= UNSEEN_SHARE]
    b = balanced_share
    place_share = {PLACE_NAMES[p - 1]: (1 - b) * places[p] + (b / len(asked) if p in asked else 0.0)
                   for p in range(1, max_len + 1)}
    length_share = {n: (1 - b) * sum(joint[n]) + b * sum(joint[n][p] / places[p] for p in asked) / len(asked)
                    for n in range(1, max_len + 1)}
    return Support(length_share, place_share)


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Assessment:
    """A question judged against the task: the exact answer (None outside the task's form) and
    why it lies outside the training distribution (no reasons: inside it)."""

    expected: str | None
    reasons: tuple = field(default_factory=tuple)

    def check(self, answer: str) -> dict:
        """The `check` object of the API for one backend's answer."""
        return {"expected": self.expected,
                "correct": None if self.expected is None else answer == self.expected,
                "in_distribution": not self.reasons,
                "reasons": [{"code": r.code, "message": r.message} for r in self.reasons]}


def normalise_question(question: str) -> str:
    """The trained form of a question a person may type otherwise (any case, runs of spaces, thousands
    separators): `What is the tens digit of 89290?`. Text it cannot map comes back unchanged."""
    match = _LOOSE_GROUPED_RE.match(question)
    if not match:
        return question
    place = " ".join(match.group("place").lower().split())
    if place not in PLACE_NAMES:
        return question
    return f"What is the {place} digit of {match.group('integer').replace(',', '')}?"


# below this share of questions beyond a number's digits answered (measured from its stored file),
# a model that was trained on them is still warned about
BEYOND_RELIABLE = 0.99


def assess(question: str, balanced_share: float = 0.0, beyond_share: float = 0.0,
           beyond_accuracy: float | None = None) -> Assessment:
    """The exact answer to a place-value question and the reasons it is out of distribution for a
    model trained with `balanced_share` of its batches place-balanced and `beyond_share` asking
    beyond the number's digits (its recorded recipe), which answers `beyond_accuracy` of such
    questions from its stored file where that was measured."""
    match = _LOOSE_QUESTION_RE.match(question)
    if not match:
        return Assessment(None, (Reason("not_task_form", 'not a question of the form "What is the <place> '
                                        'digit of <integer>?": the models only learned that form'),))
    place_name = " ".join(match.group("place").lower().split())
    written = match.group("integer")
    if place_name not in PLACE_NAMES:
        return Assessment(None, (Reason("unknown_place_name", f'"{place_name}" is not a place name '
                                        '(units, tens, hundreds, thousands, ten thousands, ...)'),))
    digits = written.lstrip("0") or "0"
    place = PLACE_NAMES.index(place_name) + 1
    expected = digits[-place] if place <= len(digits) else "0"
    train, reasons = support("train", balanced_share=balanced_share), []
    strict = QUESTION_RE.match(question)
    if not strict or strict.group("place") != place_name:
        reasons.append(Reason("irregular_wording", "the wording differs from training's exact form "
                              "(capitals or extra spaces); answers may change"))
    if digits != written:
        reasons.append(Reason("leading_zeros", "the number is written with leading zeros, "
                              "which no training question has"))
    if len(digits) > train.max_digits:
        reasons.append(Reason("number_too_long", f"the number has {len(digits)} digits; training numbers "
                              f"have at most {train.max_digits} digits"))
    share = train.place_share.get(place_name, 0.0)
    if share < UNSEEN_SHARE:
        reasons.append(Reason("place_unseen", f'the "{place_name}" digit is never asked in training'))
    elif share < RARE_SHARE:
        reasons.append(Reason("place_rare", f'the "{place_name}" digit is rarely asked in training '
                              f"({share:.1%} of questions)"))
    unlearnt = beyond_accuracy is not None and beyond_accuracy < BEYOND_RELIABLE
    if place > len(digits) and (not beyond_share or unlearnt):
        why = (f"this model answers {beyond_accuracy:.0%} of such questions" if beyond_share
               else "training never asks beyond a number's digits")
        reasons.append(Reason("place_beyond_number", f"{digits} has {len(digits)} digit"
                              f"{'s' if len(digits) > 1 else ''}, so its {place_name} digit is 0; {why}"))
    return Assessment(expected, tuple(reasons))
