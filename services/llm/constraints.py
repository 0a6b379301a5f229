"""Constrained decoding for `response_format`: the answer is forced into a JSON Schema, any JSON
object, a regex or an EBNF grammar, token by token, with xgrammar (the grammar engine vLLM and SGLang
use) rather than a grammar engine of our own.

How it fits the batch: every constrained request carries an xgrammar `GrammarMatcher`, which knows
how much of the grammar the answer has matched so far. Before a step's tokens are chosen, each
matcher writes its row of a token bitmask (one bit per vocabulary entry: may this token come
next?) and one kernel call sets the disallowed logits of those rows to -inf. Rows without a
constraint are left out of that call, so their logits, and their answers, stay exactly those of an
unconstrained batch. After sampling, the matcher accepts the chosen token. Once the grammar is
complete only the stop tokens stay allowed, so the next token is EOS and the answer ends with
finish reason "stop". `max_tokens` still applies: an answer cut by it ends with "length" and may
then be incomplete JSON.

What costs what: turning a grammar into token masks ("compiling" it against the vocabulary) takes
milliseconds on a small vocabulary and up to seconds on a 150k one, so compiled grammars are kept
per (kind, text) in a bounded LRU per loaded model. Parsing a grammar needs no vocabulary: requests
are parsed when they are submitted, so a bad schema is INVALID_ARGUMENT before the stream starts.
Filling a mask costs microseconds per row (measured: ~4 µs per row inside a JSON string on the tiny
vocabulary), small next to a forward step.

A caveat of the random-weight model: nothing ends a JSON string but the model choosing the closing
quote, so schemas meant for it should bound their strings (`maxLength`) and arrays (`maxItems`).
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Sequence

import torch
import xgrammar as xgr

from capmesh.services.llm.domain import ResponseFormat
from capmesh.services.runtime.errors import InvalidArgument

COMPILED_GRAMMARS = 128  # per loaded model; a compiled grammar of a small schema is tens of KB
PARSED_GRAMMARS = 256

# `json_object` is "any JSON object": xgrammar's builtin JSON grammar would also accept a top-level
# array, so it is compiled from the schema that says "an object".
ANY_OBJECT_SCHEMA = '{"type": "object"}'

# xgrammar 0.2.9 writes the characters of a string with minLength/maxLength as `[^"\\\r\n]`, which
# lets raw control characters (U+0000..U+001F) into the string: invalid JSON. Its unbounded strings
# use the right class; this swaps it in.
_LOOSE_STRING_CHAR = r"[^\"\\\r\n]"
_JSON_STRING_CHAR = r"[^\0-\x1f\"\\]"


def check(fmt: ResponseFormat) -> None:
    """Raises InvalidArgument naming `response_format.<kind>` when xgrammar cannot parse the format."""
    _parse(fmt)


@functools.lru_cache(maxsize=PARSED_GRAMMARS)
def _parse(fmt: ResponseFormat) -> xgr.Grammar:
    try:
        if fmt.kind == "regex":
            return xgr.Grammar.from_regex(fmt.text)
        if fmt.kind == "grammar":
            return xgr.Grammar.from_ebnf(fmt.text)
        # Compact JSON (no free whitespace): a random model would otherwise fill the answer with
        # spaces and newlines, and real models gain nothing from them.
        schema = fmt.text if fmt.kind == "json_schema" else ANY_OBJECT_SCHEMA
        grammar = xgr.Grammar.from_json_schema(schema, any_whitespace=False)
        return xgr.Grammar.from_ebnf(str(grammar).replace(_LOOSE_STRING_CHAR, _JSON_STRING_CHAR))
    except RuntimeError as exc:  # xgrammar reports every parse error as RuntimeError
        raise InvalidArgument.single(fmt.field, f"cannot be compiled: {_reason(exc)}") from None


def _reason(exc: RuntimeError) -> str:
    """xgrammar's message without its C++ source location (`[time] file.cc:123: `)."""
    text = str(exc).strip()
    head, _, rest = text.partition(": ")
    return rest.strip() if rest and ".cc:" in head else text


class Grammars:
    """The compiled grammars of one loaded model, and matchers made from them."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        # The model's logits may be wider than the tokenizer's vocabulary (padded embeddings):
        # masks are sized to the logits, and the extra ids are never allowed.
        # With no stop ids known, xgrammar reads them from the tokenizer itself.
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids) or None
        )
        # Compiling runs on the scheduler thread, which already has a core; more threads would only
        # take CPU from the batch.
        self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self._compiled: collections.OrderedDict[ResponseFormat, xgr.CompiledGrammar] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.vocab_size = vocab_size

    def compile(self, fmt: ResponseFormat) -> xgr.CompiledGrammar:
        """The compiled grammar of `fmt`, compiled on first use and then kept (LRU)."""
        with self._lock:
            compiled = self._compiled.get(fmt)
            if compiled is not None:
                self._compiled.move_to_end(fmt)
                return compiled
        try:
            compiled = self._compiler.compile_grammar(_parse(fmt))
        except RuntimeError as exc:  # parsed, yet not compilable against this vocabulary
            raise InvalidArgument.single(fmt.field, f"cannot be compiled: {_reason(exc)}") from None
        with self._lock:
            self._compiled[fmt] = compiled
            if len(self._compiled) > COMPILED_GRAMMARS:
                self._compiled.popitem(last=False)
        return compiled

    def matcher(self, fmt: ResponseFormat) -> xgr.GrammarMatcher:
        return xgr.GrammarMatcher(self.compile(fmt))


class BatchMasker:
    """Masks the logits of the constrained rows of a step, and advances their matchers.

    Each is one call into xgrammar for the whole batch, not one per row: every such call lets go of
    the GIL, and taking it back costs the scheduler thread a wait behind the event loop's thread.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)  # grown to the largest batch seen
        self._filler = xgr.BatchGrammarMatcher(max_threads=1)

    def apply(self, logits: torch.Tensor, matchers: Sequence[xgr.GrammarMatcher | None]) -> None:
        """Masks `logits` [rows, vocab] in place; row i follows matchers[i] (None: unconstrained)."""
        indices = [i for i, matcher in enumerate(matchers) if matcher is not None]
        if not indices:
            return
        rows = len(matchers)
        if self._bitmask.shape[0] < rows:
            self._bitmask = xgr.allocate_token_bitmask(rows, self.vocab_size)
        bitmask = self._bitmask[:rows]
        constrained = [m for m in matchers if m is not None]
        self._filler.batch_fill_next_token_bitmask(constrained, bitmask, indices=indices)
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device, non_blocking=True), indices=indices)

    @staticmethod
    def accept(matchers: Sequence[xgr.GrammarMatcher | None], tokens: Sequence[int]) -> None:
        """Advances each row's matcher by the token chosen for that row (the mask allowed it)."""
        rows = [i for i, matcher in enumerate(matchers) if matcher is not None]
        if rows:
            xgr.BatchGrammarMatcher.batch_accept_token(
                [m for m in matchers if m is not None], [tokens[i] for i in rows]
            )
