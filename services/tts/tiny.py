"""The tiny random VITS checkpoint: a real VitsModel + VitsTokenizer, small enough for tests.

Its speech is noise (random weights), but loading and running it exercises the same
`from_pretrained` code as a real MMS-TTS model.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

from capmesh.services.runtime.tiny import ensure_tiny

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
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    vocab_file = dest / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = VitsTokenizer(str(vocab_file), language="en", add_blank=True, normalize=True, phonemize=False)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        upsample_rates=[8, 8, 2, 2],
        upsample_kernel_sizes=[16, 16, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=2,
        depth_separable_num_layers=1,
        use_stochastic_duration_prediction=False,
        sampling_rate=SAMPLE_RATE,
    )
    torch.manual_seed(0)  # the same checkpoint every time it is built
    model = VitsModel(config).eval()
    # Random durations would make a short sentence last many seconds. About 3 frames (48 ms) per
    # token, i.e. speech-like ~10 characters per second, keeps test and benchmark audio realistic.
    with torch.no_grad():
        model.duration_predictor.proj.weight.mul_(0.01)
        model.duration_predictor.proj.bias.fill_(math.log(TOKEN_FRAMES))
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
