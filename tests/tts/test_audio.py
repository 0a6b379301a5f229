"""Audio plumbing: WAV headers (streamed and final), resampling, encoders, sentence splitting."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from capmesh.client.tts import finalize_wav
from capmesh.services.tts.audio import (
    Pcm,
    apply_gain,
    decode_audio,
    read_wav,
    resample,
    wav_header,
)
from capmesh.services.tts.domain import AudioFormat
from capmesh.services.tts.encoders import (
    available_formats,
    make_encoder,
    nearest_supported_rate,
    supported_sample_rates,
)
from capmesh.services.tts.sentences import split_sentences

from .conftest import decode_with_pyav


def tone(seconds: float, rate: int, hz: float = 440.0) -> Pcm:
    t = np.arange(round(seconds * rate)) / rate
    return Pcm((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)


def encode_blocks(audio_format: AudioFormat, rate: int, blocks: list[Pcm]) -> list[bytes]:
    encoder = make_encoder(audio_format, rate)
    pieces = [encoder.encode(block) for block in blocks]
    pieces.append(encoder.finish())
    return pieces


def test_streamed_wav_header_reads_to_the_end_with_wave_and_ffmpeg():
    pieces = encode_blocks(AudioFormat.WAV, 16000, [tone(0.5, 16000), tone(0.25, 16000)])
    data = b"".join(pieces)
    assert data[4:8] == b"\xff\xff\xff\xff" and data[40:44] == b"\xff\xff\xff\xff"
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (16000, 1, 2)
        assert len(reader.readframes(10**9)) // 2 == 12000
    assert len(decode_with_pyav(data).samples) == 12000


def test_the_client_patches_exact_sizes_into_a_streamed_wav():
    data = b"".join(encode_blocks(AudioFormat.WAV, 8000, [tone(0.5, 8000)]))
    final = finalize_wav(data)
    with wave.open(io.BytesIO(final)) as reader:
        assert reader.getnframes() == 4000
    assert final == wav_header(8000, 8000) + data[44:]


def test_read_wav_tolerates_streaming_sizes_and_averages_stereo():
    stereo = np.array([[1000, 3000], [-1000, -3000]], dtype="<i2")
    data = wav_header(8000)[:22] + b"\x02\x00" + wav_header(8000)[24:] + stereo.tobytes()
    pcm = read_wav(data)
    assert pcm.sample_rate == 8000
    np.testing.assert_allclose(pcm.samples, [2000 / 32768, -2000 / 32768])
    with pytest.raises(ValueError):
        read_wav(b"not a wav at all")


def test_resample_keeps_duration_and_gain_clips():
    pcm = tone(1.0, 22050)
    out = resample(pcm, 16000)
    assert out.sample_rate == 16000
    assert abs(len(out.samples) - 16000) <= 2
    louder = apply_gain(pcm, 4.0)
    assert louder.samples.max() <= 1.0 and louder.samples.max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "audio_format", [f for f in available_formats() if f not in (AudioFormat.WAV, AudioFormat.PCM)]
)
def test_compressed_encoders_stream_pieces_that_form_one_decodable_file(audio_format):
    rate = nearest_supported_rate(audio_format, 22050)
    blocks = [tone(0.4, rate), tone(0.4, rate, 660.0), tone(0.4, rate, 880.0)]
    pieces = encode_blocks(audio_format, rate, blocks)
    assert sum(1 for p in pieces[:-1] if p) >= 2, "bytes must leave before the end, not all at finish()"
    decoded = decode_with_pyav(b"".join(pieces))
    assert abs(len(decoded.samples) / decoded.sample_rate - 1.2) < 0.1
    assert decode_audio(b"".join(pieces)).duration_s == pytest.approx(decoded.duration_s, abs=0.01)


def test_rates_that_a_format_cannot_carry_are_avoided():
    if AudioFormat.OGG in available_formats() and supported_sample_rates(AudioFormat.OGG):
        assert nearest_supported_rate(AudioFormat.OGG, 22050) in supported_sample_rates(AudioFormat.OGG)
    assert supported_sample_rates(AudioFormat.WAV) is None
    assert nearest_supported_rate(AudioFormat.WAV, 22050) == 22050


def test_pcm_is_raw_s16le():
    pieces = encode_blocks(AudioFormat.PCM, 8000, [Pcm(np.array([0.5, -0.5, 2.0], np.float32), 8000)])
    assert np.frombuffer(b"".join(pieces), "<i2").tolist() == [16384, -16384, 32767]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Dr. Smith paid 3.50 dollars, e.g. cash. Then left", ["Dr. Smith paid 3.50 dollars, e.g. cash.", "Then left"]),
        ("你好。今天天气很好！你呢？好的", ["你好。", "今天天气很好！", "你呢？", "好的"]),
        ('"Quoted." Next.\n\nNo stop\nhere', ['"Quoted."', "Next.", "No stop here"]),
        ("  \n ", []),
    ],
)
def test_sentence_splitting(text, expected):
    assert split_sentences(text) == expected


def test_long_sentences_are_cut_at_commas_or_spaces():
    parts = split_sentences("word, " * 100, max_chars=50)
    assert all(len(p) <= 50 for p in parts)
    assert " ".join(parts).split() == ("word, " * 100).split()
