"""Streaming text: deltas are whole characters and join to the full decode; stop sequences cut."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from capmesh.services.llm.detokenize import IncrementalDetokenizer, StopScanner, make_decoder


@pytest.fixture(scope="module")
def tokenizer(tiny_llm_path):
    return AutoTokenizer.from_pretrained(tiny_llm_path)


def stream(decode, ids):
    detokenizer = IncrementalDetokenizer(decode)
    deltas = [detokenizer.push(i) for i in ids]
    deltas.append(detokenizer.flush())
    return [d for d in deltas if d]


def test_deltas_of_multibyte_text_are_whole_characters(tokenizer):
    text = "日本語 и русский, Grüße 🙂🚀 ✨ done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas = stream(make_decoder(tokenizer), ids)
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert len(deltas) < len(ids)  # the emoji's bytes came in several tokens, released together


def test_random_token_sequences_join_to_the_full_decode(tokenizer):
    decode = make_decoder(tokenizer)
    rng = random.Random(7)
    for _ in range(50):
        ids = [rng.randrange(3, len(tokenizer)) for _ in range(rng.randrange(1, 40))]
        assert "".join(stream(decode, ids)) == tokenizer.decode(ids, skip_special_tokens=True)


def test_stop_scanner_holds_back_a_partial_stop_and_cuts_at_the_stop():
    scanner = StopScanner(["END", "##"])
    assert scanner.feed("abc E") == "abc "
    assert scanner.feed("N") == ""
    assert scanner.feed("x #") == "ENx "
    assert scanner.feed("#tail") == ""
    assert scanner.stopped


def test_stop_scanner_without_stops_passes_text_through():
    scanner = StopScanner([])
    assert scanner.feed("abc") == "abc"
    assert not scanner.stopped
