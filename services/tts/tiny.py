"""The tiny random VITS checkpoint: a real VitsModel (config in `tiny.json`) + VitsTokenizer, small enough for tests.

Its speech is noise (random weights), but loading and running it exercises the same
`from_pretrained` code as a real MMS-TTS model.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

from capmesh.services.runtime.tiny import build_component, ensure_tiny, read_recipe

TINY_NAME = "tts"
SAMPLE_RATE = 16000  # MMS-TTS models speak at 16 kHz
TOKEN_FRAMES = 2.2  # spectrogram frames (256 samples each) per token before rounding up


def _vocab() -> dict[str, int]:
    # id 0 is the blank that VitsTokenizer intersperses between characters (add_blank=True).
    symbols = ["<pad>", "<unk>", " ", *string.ascii_lowercase, *string.digits, "'", "-"]
    return {symbol: index for index, symbol in enumerate(symbols)}


def tiny_path() -> Path:
    """The tiny checkpoint in the shared cache, built on first use."""
    return ensure_tiny(TINY_NAME, build_tiny)


def build_tiny(dest: Path) -> None:
    import torch
    from transformers import VitsTokenizer

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    vocab_file = dest / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = VitsTokenizer(str(vocab_file), language="en", add_blank=True, normalize=True, phonemize=False)
    recipe = read_recipe(Path(__file__).parent, TINY_NAME)
    model = build_component(recipe, vocab_size=len(vocab), sampling_rate=SAMPLE_RATE).eval()
    # Random durations would make a short sentence last many seconds. About 3 frames (48 ms) per
    # token, i.e. speech-like ~10 characters per second, keeps test and benchmark audio realistic.
    with torch.no_grad():
        model.duration_predictor.proj.weight.mul_(0.01)
        model.duration_predictor.proj.bias.fill_(math.log(TOKEN_FRAMES))
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
