"""Tokenizers for tiny checkpoints, written locally (no hub download): T5 unigram and CLIP BPE.

The vocabularies cover lower-case letters, digits and a few common words, which is all a random-weight
model needs: any prompt tokenizes (unknown characters map to the unknown token) and the files load back
through the real `from_pretrained` code. In transformers 5 the tokenizer classes take the vocabulary
itself (`vocab=` / `merges=`); file arguments are ignored, so the tokenizer is built in memory and then
saved with `save_pretrained`.
"""

from __future__ import annotations

import string

from transformers import CLIPTokenizer, T5Tokenizer

COMMON_WORDS = ("a", "the", "cat", "dog", "walks", "runs", "on", "in", "of", "and", "beach", "city", "portrait")


def tiny_t5_tokenizer(model_max_length: int = 64) -> T5Tokenizer:
    """A T5 (sentencepiece-style unigram) tokenizer: <pad>=0, </s>=1, <unk>=2, then pieces."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -3.0) for word in COMMON_WORDS]
    pieces += [(char, -5.0) for char in string.ascii_letters + string.digits + string.punctuation]
    pieces += [(f"▁{char}", -6.0) for char in string.ascii_letters + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def tiny_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer with one merge per common word so that words stay whole."""
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(f"{char}</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in COMMON_WORDS:
        merged = word[0]
        for index, char in enumerate(word[1:], start=1):
            piece = f"{char}</w>" if index == len(word) - 1 else char
            if (merged, piece) not in merges:
                merges.append((merged, piece))
            merged = merged + piece
            vocab.setdefault(merged, len(vocab))
    # transformers annotates `merges` as list[str], but hands it to tokenizers' BPE, which takes (left, right) pairs.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)  # type: ignore[arg-type]
