"""Turning a growing list of token ids into text deltas that are always whole characters.

A byte-level tokenizer may put the bytes of one character into different tokens, so decoding each
token alone would emit broken characters. `IncrementalDetokenizer` decodes a small window of
recent tokens and holds text back while it ends in an incomplete character (U+FFFD), the approach
of TGI and vLLM. `StopScanner` holds back text that could be the start of a stop sequence, so that
no caller ever sees part of a stop sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"

Decode = Callable[[Sequence[int]], str]


def make_decoder(tokenizer) -> Decode:
    """A decode function without special tokens; the Rust tokenizer directly where there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(list(ids), skip_special_tokens=True)
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


class IncrementalDetokenizer:
    """Feeds token ids one at a time; `push` returns the new whole characters (maybe "")."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._ids: list[int] = []
        # _ids[_prefix:_read] decodes to text already returned; it gives the decoder context
        # (some tokenizers render a token differently at the start of a string).
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Returns whatever is held back, broken characters included: the sequence has ended."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :]


class StopScanner:
    """Cuts the text at the first stop sequence and holds back a possible partial match."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Returns the text that is safe to emit; sets `stopped` when a stop sequence appeared."""
        if not self._stops:
            return text
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            safe, self._pending = self._pending[: min(hits)], ""
            return safe
        keep = self._partial_match_length()
        safe = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return safe

    def flush(self) -> str:
        held, self._pending = self._pending, ""
        return held

    def _partial_match_length(self) -> int:
        """The longest suffix of the pending text that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:length]):
                    best = length
                    break
        return best
