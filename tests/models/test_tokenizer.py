import re

import pytest
import torch

from models.tokenizer import BOS, EOS, PAD, Tokenizer, pad_batch


def test_round_trip_over_whole_charset(tokenizer):
    text = tokenizer.charset[:160]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.vocab_size == 3 + 95


def test_target_has_bos_and_eos(tokenizer):
    ids = tokenizer.encode_target("9")
    assert ids[0] == BOS and ids[-1] == EOS and tokenizer.decode(ids) == "9"


def test_decode_stops_at_eos_and_skips_pad(tokenizer):
    ids = [tokenizer.stoi["4"], tokenizer.stoi["2"], EOS, tokenizer.stoi["7"]]
    assert tokenizer.decode(ids) == "42"
    assert tokenizer.decode([PAD, tokenizer.stoi["1"]]) == "1"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 161, "161 characters"),
    ("What is the tens digit of 5€?", "'€' (U+20AC) at position 27"),
    ("tab\there", "position 3"),
    ("naïve", "position 2"),
    ("nul\x00", "U+0000"),
])
def test_bad_input_raises_with_useful_message(tokenizer, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tokenizer.encode(text)


def test_non_string_rejected(tokenizer):
    with pytest.raises(ValueError, match="must be a string"):
        tokenizer.encode(42)


def test_pad_batch_right_pads():
    batch = pad_batch([[5, 6, 7], [8]])
    assert batch.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert batch.dtype == torch.long


def test_serialisation_round_trip(tokenizer):
    again = Tokenizer.from_dict(tokenizer.to_dict())
    assert again.itos == tokenizer.itos
    with pytest.raises(ValueError):
        Tokenizer.from_dict({"type": "bpe"})
