"""Character-level tokenizer over DeepMind's mathematics-dataset character set.

The dataset (Saxton et al., 2019) uses space plus printable ASCII letters, digits and
punctuation; questions are at most 160 characters and answers at most 30.
"""
import string

import torch

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARSET = " " + string.ascii_letters + string.digits + string.punctuation
MAX_QUESTION_CHARS = 160
MAX_ANSWER_CHARS = 30


class QuestionError(ValueError):
    """Text the models cannot take, with a stable code for clients: invalid_type, empty_question,
    question_too_long or invalid_character. `index` names the question within a batch."""

    def __init__(self, code: str, message: str, index: int | None = None):
        super().__init__(message)
        self.code, self.message, self.index = code, message, index


class Tokenizer:
    """Maps text to token ids and back; rejects text the models were never trained on."""

    def __init__(self, charset: str = CHARSET):
        self.charset = charset
        self.itos = list(SPECIALS) + list(charset)
        self.stoi = {ch: i + len(SPECIALS) for i, ch in enumerate(charset)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def validate(self, text: str, what: str = "question", max_chars: int = MAX_QUESTION_CHARS) -> None:
        """Raise QuestionError naming the problem if `text` cannot be encoded."""
        if not isinstance(text, str):
            raise QuestionError("invalid_type", f"{what} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise QuestionError("empty_question", f"{what} is empty")
        if len(text) > max_chars:
            raise QuestionError("question_too_long", f"{what} is {len(text)} characters long; the limit is {max_chars}")
        for position, ch in enumerate(text):
            if ch not in self.stoi:
                raise QuestionError(
                    "invalid_character", f"{what} contains the character {ch!r} (U+{ord(ch):04X}) at position {position}, "
                    "outside the supported set (space, ASCII letters, digits, punctuation)"
                )

    def encode(self, text: str, what: str = "question", max_chars: int = MAX_QUESTION_CHARS) -> list[int]:
        """Token ids of `text`, without special tokens."""
        self.validate(text, what, max_chars)
        return [self.stoi[ch] for ch in text]

    def encode_target(self, answer: str) -> list[int]:
        """Decoder sequence for an answer: bos, characters, eos."""
        return [BOS] + self.encode(answer, "answer", MAX_ANSWER_CHARS) + [EOS]

    def decode(self, ids) -> str:
        """Text of `ids`, stopping at the first eos and skipping pad/bos."""
        chars = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= len(SPECIALS):
                chars.append(self.itos[i])
        return "".join(chars)

    def batch_questions(self, questions: list[str]) -> torch.Tensor:
        """Right-padded (B, S) LongTensor of encoded questions."""
        return pad_batch([self.encode(q) for q in questions])

    def to_dict(self) -> dict:
        return {"type": "char", "charset": self.charset, "specials": list(SPECIALS)}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        if data.get("type") != "char" or list(data.get("specials", [])) != list(SPECIALS):
            raise ValueError(f"unsupported tokenizer description: {data!r}")
        return cls(data["charset"])


def pad_batch(sequences: list[list[int]]) -> torch.Tensor:
    """Right-pad lists of ids with PAD into one (B, T) LongTensor."""
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out
