"""The transformers chat engine: one scheduler thread runs every request in a continuous batch.

Why our own scheduler rather than transformers' `ContinuousBatchingManager` / `generate_batch`:
measured on this CPU with the tiny checkpoint, `generate_batch` ran 8 requests x 64 tokens at about
100 tokens/s (its paged-attention path is built for CUDA), while one batched forward step of the
tiny model costs ~0.6 ms for 8 rows; the manager also has one sampling configuration for all
requests and gives no final result for a cancelled request. A scheduler on the model's plain forward
supports per-request temperature, top_p and seed, stop sequences and cancellation at every step.

How the batch works: the running requests share one KV cache (a `DynamicCache` whose rows are
left-padded to a common length, with an attention mask hiding the padding, and explicit position
ids per row). A new request is prefilled alone, then its cache is padded and stacked onto the
batch between two decoding steps; a finished or cancelled request's row is dropped and all-padding
columns are trimmed. Each step runs one forward over all rows and picks each row's token with its
own sampling settings. A request that runs alone takes the same code path with a batch of one, so
greedy answers are the same alone or in a batch (the test proves it).

A request with a `response_format` is decoded under a grammar: its row of each step's logits is
masked to the tokens the grammar allows before its token is chosen (see `constraints.py`); a
request whose tool_choice is `required` or a named tool is decoded under its tools' schema the same
way (see `tools.py`). Penalties and logit_bias adjust a row's logits before the mask, and log
probabilities are read from that same row after it (see `sampling.py`): no second forward.

`n` > 1: the choices of one request are sibling rows. The prompt is prefilled once; each sibling
chooses its first token from the same logits and joins the batch with its own view of that one
prefilled cache (the batch copies rows when it stacks them, so nothing is shared after that).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import jinja2
import structlog
import torch
import torch.nn.functional as F
import xgrammar as xgr

from capmesh.services.llm import constraints
from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.detokenize import IncrementalDetokenizer, StopScanner, make_decoder
from capmesh.services.llm.domain import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    FinishReason,
    Queued,
    ResponseFormat,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from capmesh.services.llm.engine import Delivery, LlmEngine, Outbox, Sink, Submission
from capmesh.services.llm.sampling import SamplingParams, adjust_logits, choose_tokens, step_logprobs
from capmesh.services.llm.tiny import tiny_path
from capmesh.services.llm.tools import ConstrainedCalls, TaggedCalls, constrained_format, template_tools
from capmesh.services.llm.validation import MAX_SEED, prompt_too_long, validate
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import CapmeshError, Internal, InvalidArgument, ResourceExhausted, Unavailable
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager, torch_module_bytes
from capmesh.services.runtime.tiny import TINY, is_random_checkpoint

log = structlog.get_logger("capmesh.llm")

LOGPROB_FLOOR = -9999.0  # OpenAI's stand-in for "impossible" (-inf is not JSON)
UNKNOWN_CONTEXT = 1 << 30  # before the model is loaded, the context checks wait for the scheduler
# Below this size an op is too small to split across CPU threads: the extra threads only spin and
# take the CPU from the event loop that streams the tokens (measured: 5x slower on 2 busy cores).
SMALL_MODEL_PARAMETERS = 100_000_000


# -- the loaded model ------------------------------------------------------------------------------
class _KVLayer(Protocol):
    """One layer of a prefilled KV cache: transformers' DynamicLayer once it holds tokens (it types
    keys and values Optional only because a layer is empty until the first forward)."""

    keys: torch.Tensor  # [rows, heads, tokens, head dim]
    values: torch.Tensor


class _KVCache(Protocol):
    """What the batch uses of the `DynamicCache` a forward fills: its per-layer keys and values."""

    layers: Sequence[_KVLayer]


class ChatModel:
    """A causal LM with its tokenizer, and the two forwards the scheduler needs."""

    def __init__(self, model, tokenizer, device: torch.device, context_window: int, cpu_threads: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.context_window = context_window
        self.cpu_threads = cpu_threads  # 0: torch's default
        self.decode = make_decoder(tokenizer)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.vocab_size = vocab_size = int(model.config.vocab_size)  # the width of the logits
        self.grammars = constraints.Grammars(tokenizer, vocab_size, sorted(self.eos_ids))
        self.masker = constraints.BatchMasker(vocab_size)
        # A template that reads `tools` knows a tool format; the others never see tools (tools.py).
        self.knows_tools = "tools" in (tokenizer.chat_template or "")
        self._token_texts: dict[int, tuple[str, bytes]] = {}
        # A byte-level BPE (GPT-2's scheme, most open models') spells each byte as one character:
        # reading a token's spelling back through that table gives its true bytes, also for a token
        # that holds half of a character.
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_of_char = _byte_of_char() if type(decoder).__name__ == "ByteLevel" else {}

    def encode_prompt(self, request: ChatRequest) -> list[int]:
        if request.prompt:
            return list(self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"])
        options: dict[str, object] = {}
        if request.calls_tools and self.knows_tools:
            options["tools"] = template_tools(request.tools)
        try:
            text = self.tokenizer.apply_chat_template(
                [_template_message(m) for m in request.messages], add_generation_prompt=True, tokenize=False, **options
            )
        except jinja2.TemplateError as exc:  # templates raise on what they cannot render (roles, order)
            raise InvalidArgument.single("messages", f"the model's chat template refused them: {exc}") from None
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_text(self, token: int) -> tuple[str, bytes]:
        """One token's own text, special tokens included, and its bytes (for log probabilities)."""
        known = self._token_texts.get(token)
        if known is None:
            text = self.tokenizer.decode([token], skip_special_tokens=False)
            raw = text.encode()
            if self._byte_of_char and token not in self.tokenizer.all_special_ids:
                spelling = self.tokenizer.convert_ids_to_tokens(token)
                raw = bytes(self._byte_of_char.get(char, 0) for char in spelling)
            known = self._token_texts[token] = (text, raw)
        return known

    def prefill(self, prompt: list[int]) -> tuple[torch.Tensor, _KVCache]:
        """Runs one prompt alone; returns its last logits [1, vocab] and its cache."""
        from transformers import DynamicCache

        cache = DynamicCache()
        ids = torch.tensor([prompt], device=self.device)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float(), out.past_key_values

    def decode_step(self, batch: _Batch) -> torch.Tensor:
        """One token for every row of the batch; returns logits [rows, vocab]."""
        rows = len(batch.rows)
        cache, mask = batch.shared()
        ids = torch.tensor(batch.last_tokens, device=self.device).unsqueeze(1)
        positions = torch.tensor(batch.positions, device=self.device).unsqueeze(1)
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=self.device)], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch.mask = mask
        return out.logits[:, -1, :].float()

    def release(self) -> None:
        self.model = None
        self.tokenizer = None


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet read backwards: the byte each character spells."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def _template_message(message: ChatMessage) -> dict:
    """A message in the shape chat templates read (OpenAI's, with arguments as objects)."""
    out: dict = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _arguments(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, setting)


# -- one request -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Decoding:
    """How a request's tokens are chosen and turned into text; made once its prompt is tokenized."""

    sampling: SamplingParams
    detokenizer: IncrementalDetokenizer
    stops: StopScanner
    grammar: xgr.GrammarMatcher | None  # None: free text
    calls: ConstrainedCalls | TaggedCalls | None  # None: no tools take part


@dataclass(eq=False)
class _Sequence:
    """One choice of a request; a request with n choices is n sibling sequences."""

    request: ChatRequest
    cancel: CancelToken
    sink: Sink
    submission: Submission
    model_name: str
    index: int = 0  # the choice
    submitted_at: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_new_tokens: int = 0
    decoding: _Decoding | None = None  # set by `_prepare`, before the request's first token
    text_parts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    unsent_logprobs: int = 0  # the last entries of `logprobs` no delta carried yet
    finished: bool = False
    outbox: Outbox | None = None  # set once the scheduler thread owns the request

    def deliver(self, item: Delivery) -> None:
        if self.outbox is None:
            self.sink.deliver(item)
        else:
            self.outbox.deliver(self.sink, item)

    @property
    def should_stop(self) -> bool:
        return self.cancel.cancelled or self.submission.abandoned

    @property
    def prepared(self) -> _Decoding:
        """The decoding state of a request that generates tokens (only prepared requests do)."""
        if self.decoding is None:
            raise RuntimeError("a request generates tokens before its prompt was prepared")
        return self.decoding

    def emit(self, text: str, final: bool = False) -> None:
        """Streams new answer text (split into tool-call pieces where tools take part); `final`
        sends the log probabilities no delta carried yet even without new text."""
        calls = self.decoding.calls if self.decoding is not None else None
        tool_calls: list[ToolCallDelta] = []
        if isinstance(calls, ConstrainedCalls):
            tool_calls, text = calls.feed(text), ""
        elif isinstance(calls, TaggedCalls):
            text, tool_calls = calls.feed(text)
            if final:
                text += calls.flush()
        if not (text or tool_calls or (final and self.unsent_logprobs)):
            return
        if text:
            self.text_parts.append(text)
        logprobs = tuple(self.logprobs[len(self.logprobs) - self.unsent_logprobs :]) if self.unsent_logprobs else ()
        self.unsent_logprobs = 0
        self.deliver(TextDelta(text, self.completion_tokens, self.index, logprobs, tuple(tool_calls)))


# -- the running batch -----------------------------------------------------------------------------
class _Batch:
    """The running rows with their shared, left-padded KV cache."""

    def __init__(self) -> None:
        self.rows: list[_Sequence] = []
        self.cache: _KVCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, cached length]: 1 real, 0 padding
        self.positions: list[int] = []  # each row's position id for its next token
        self.last_tokens: list[int] = []

    def shared(self) -> tuple[_KVCache, torch.Tensor]:
        """The cache and mask of a batch with rows (both are set while any row runs)."""
        if self.cache is None or self.mask is None:
            raise RuntimeError("the batch has rows but no KV cache")
        return self.cache, self.mask

    def holds(self, cache: _KVCache) -> bool:
        """Whether `cache` is the batch's own cache (the first choice of its prompt joined with it)."""
        return self.cache is cache

    def add(self, seq: _Sequence, cache: _KVCache, prompt_len: int, first_token: int) -> None:
        device = cache.layers[0].keys.device
        row_mask = torch.ones(1, prompt_len, dtype=torch.long, device=device)
        if not self.rows:
            self.cache, self.mask = cache, row_mask
        else:
            own_cache, mask = self.shared()
            length = max(mask.shape[1], prompt_len)
            for mine, theirs in zip(own_cache.layers, cache.layers):
                mine.keys = torch.cat([_pad_left(mine.keys, length), _pad_left(theirs.keys, length)], dim=0)
                mine.values = torch.cat([_pad_left(mine.values, length), _pad_left(theirs.values, length)], dim=0)
            self.mask = torch.cat([_pad_left(mask, length), _pad_left(row_mask, length)], dim=0)
        self.rows.append(seq)
        self.positions.append(prompt_len)
        self.last_tokens.append(first_token)

    def keep(self, keep: list[int]) -> None:
        """Keeps only the rows at these indices, then trims columns that are padding in every row."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self.positions = [self.positions[i] for i in keep]
        self.last_tokens = [self.last_tokens[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return
        cache, mask = self.shared()
        index = torch.tensor(keep, device=mask.device)
        mask = mask.index_select(0, index)
        start = int((mask.sum(dim=0) > 0).nonzero()[0].item())
        self.mask = mask[:, start:]
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]


@dataclass
class _LayerView:
    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class _CacheView:
    """A prefilled cache's tensors as they are now: what a sibling choice joins the batch with.

    The batch replaces a cache's tensors (cat, index_select) rather than writing into them, so a
    view taken before the first sibling joined still holds the prompt's keys and values."""

    layers: Sequence[_KVLayer]

    @classmethod
    def of(cls, cache: _KVCache) -> _CacheView:
        return cls([_LayerView(layer.keys, layer.values) for layer in cache.layers])


def _pad_left(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Pads the sequence axis (-2 for KV [b, h, t, d], -1 for a mask [b, t]) on the left with zeros."""
    if tensor.dim() == 2:
        return F.pad(tensor, (length - tensor.shape[1], 0))
    return F.pad(tensor, (0, 0, length - tensor.shape[2], 0))


def _call_parser(request: ChatRequest, model: ChatModel) -> ConstrainedCalls | TaggedCalls | None:
    """What turns the answer's text into tool calls (tools.py), if tools take part."""
    if not request.calls_tools:
        return None
    if request.tool_choice.mode == "function":
        return ConstrainedCalls(request.tool_choice.function)
    if request.tool_choice.mode == "required":
        return ConstrainedCalls()
    return TaggedCalls() if model.knows_tools else None


def _check_tool_schema(parameters: str, index: int) -> None:
    """A tool's schema that xgrammar cannot parse is the caller's mistake, named as the tool's."""
    try:
        constraints.check(ResponseFormat("json_schema", parameters))
    except InvalidArgument as exc:
        raise InvalidArgument.single(f"tools[{index}].parameters", exc.violations[0].description) from None


def _top_logprob(model: ChatModel, token: int, value: float) -> TopLogprob:
    text, raw = model.token_text(token)
    return TopLogprob(text, max(value, LOGPROB_FLOOR), raw)


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    steps: int
    tokens_generated: int


# -- the engine ------------------------------------------------------------------------------------
class TransformersChatEngine(LlmEngine):
    name = "transformers"

    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self.model_name = settings.model
        self.models = ModelManager(
            self._load, [self.model_name], residency=settings.residency, idle_unload_s=settings.idle_unload_s
        )
        self._context_window: int | None = settings.max_context or None
        self._waiting: collections.deque[list[_Sequence]] = collections.deque()  # a request's choices
        self._running = 0
        self._cond = threading.Condition()
        self._closed = False
        self._steps = 0
        self._tokens = 0
        self._step_seconds = 0.0  # moving average, for the Retry-After estimate
        self._outbox = Outbox()  # used by the scheduler thread only
        self._scheduler = threading.Thread(target=self._schedule_forever, name="capmesh-llm-scheduler", daemon=True)
        self._scheduler.start()

    # -- loading -------------------------------------------------------------------------------
    def _checkpoint_path(self) -> str:
        if self.settings.model == TINY:
            return str(tiny_path())
        return self.settings.model

    def _load(self, name: str) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self._checkpoint_path()
        device = resolve_device(self.settings.device)
        dtype = resolve_dtype(self.settings.dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if not tokenizer.chat_template:
            raise ValueError(f"the tokenizer of {path} has no chat template")
        # transformers wraps `to` with functools.wraps(torch.nn.Module.to), so mypy sees an unbound signature.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
        own_window = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 2048
        window = min(self.settings.max_context, own_window) if self.settings.max_context else own_window
        self._context_window = window
        chat_model = ChatModel(model, tokenizer, device, window, self._cpu_threads(model, device))
        random_weights = Path(path).is_dir() and is_random_checkpoint(path)
        return LoadedModel(
            handle=chat_model,
            device=str(device),
            memory_bytes=torch_module_bytes(model),
            random_weights=random_weights,
            release=chat_model.release,
            details={
                "path": path,
                "dtype": str(dtype).removeprefix("torch."),
                "context_window": str(window),
                "cpu_threads": str(chat_model.cpu_threads or torch.get_num_threads()),
            },
        )

    def _cpu_threads(self, model, device: torch.device) -> int:
        if self.settings.torch_threads:
            return self.settings.torch_threads
        small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
        return 1 if device.type == "cpu" and small else 0

    def load(self) -> None:
        """Loads the model now (eager start) instead of on the first request."""
        self.models.ensure_loaded(self.model_name)

    # -- requests ------------------------------------------------------------------------------
    def submit(self, request: ChatRequest, cancel: CancelToken, sink: Sink) -> Submission:
        model_name = self.models.resolve(request.model)
        validate(request, self.settings, self._context_window or UNKNOWN_CONTEXT)
        if request.n > self.settings.max_batch_size:
            raise InvalidArgument.single("n", f"must be at most the batch size of {self.settings.max_batch_size}")
        # A bad schema fails here, before any token.
        if request.response_format is not None:
            constraints.check(request.response_format)
        if request.calls_tools:
            for i, tool in enumerate(request.tools):
                if tool.parameters.strip():
                    _check_tool_schema(tool.parameters, i)
        submission = Submission()
        group = [_Sequence(request, cancel, sink, submission, model_name, index=i) for i in range(request.n)]
        with self._cond:
            if self._closed:
                raise Unavailable("the LLM engine is shutting down", reason="SHUTTING_DOWN")
            waiting_rows = sum(len(g) for g in self._waiting)
            if self._running + waiting_rows + request.n > self.settings.max_batch_size + self.settings.max_waiting:
                raise ResourceExhausted(
                    f"the LLM is busy: {self._running} requests running and {len(self._waiting)} waiting",
                    retry_after_s=self._retry_after_estimate(),
                )
            if self._running + waiting_rows + request.n > self.settings.max_batch_size:
                sink.deliver(Queued(len(self._waiting)))  # the batch is full: the caller sees its place
            self._waiting.append(group)
            self._cond.notify_all()
        submission.on_abandon = lambda: self._withdraw(group)
        return submission

    def _withdraw(self, group: list[_Sequence]) -> None:
        """An abandoned request still waiting leaves the queue at once (a running one at the next step)."""
        with self._cond:
            try:
                self._waiting.remove(group)
            except ValueError:
                return
            self._cond.notify_all()
        for seq in group:
            self._finish(seq, "cancelled")

    def _retry_after_estimate(self) -> float:
        tokens_left = self.settings.default_max_tokens
        return round(min(30.0, max(0.5, self._step_seconds * tokens_left)), 2)

    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(self._running, len(self._waiting), self._steps, self._tokens)

    def wait_idle(self, timeout_s: float) -> bool:
        """Blocks until no request runs or waits; False if that took longer than `timeout_s`."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running and not self._waiting, timeout_s)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._scheduler.join(timeout=30)
        super().close()

    # -- the scheduler thread ------------------------------------------------------------------
    def _schedule_forever(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
            batch = _Batch()
            try:
                with self.models.use(self.model_name) as loaded, torch.inference_mode():
                    if loaded.handle.cpu_threads:
                        torch.set_num_threads(loaded.handle.cpu_threads)
                    self._run_until_idle(loaded.handle, batch)
                self._outbox.flush()
            except CapmeshError as exc:  # the model failed to load: every queued request gets the reason
                self._fail(batch.rows + self._take_waiting(), exc)
                self._outbox.flush()
            except Exception as exc:
                log.exception("llm.scheduler_failed")
                self._fail(batch.rows + self._take_waiting(), Internal(f"the LLM engine failed: {type(exc).__name__}"))
                self._outbox.flush()
            finally:
                self._set_running(0)
        self._fail(self._take_waiting(), Unavailable("the LLM engine is shutting down", reason="SHUTTING_DOWN"))

    def _run_until_idle(self, model: ChatModel, batch: _Batch) -> None:
        """Admits, decodes and retires requests until none are left; then the model may unload."""
        while True:
            self._admit(model, batch)
            self._outbox.flush()
            if not batch.rows:
                with self._cond:
                    if not self._waiting or self._closed:
                        return
                continue
            self._retire(batch, [i for i, seq in enumerate(batch.rows) if seq.should_stop], "cancelled")
            if batch.rows:
                self._decode(model, batch)
            self._outbox.flush()
            if self._closed:
                self._retire(batch, list(range(len(batch.rows))), "cancelled")
                return

    def _admit(self, model: ChatModel, batch: _Batch) -> None:
        admitted = False
        while True:
            with self._cond:
                if not self._waiting or self._closed:
                    break
                # First come, first served: a request with n choices waits until n rows are free.
                if batch.rows and len(batch.rows) + len(self._waiting[0]) > self.settings.max_batch_size:
                    break
                group = self._waiting.popleft()
                self._running = len(batch.rows) + len(group)  # counted as running while it prefills
            admitted = True
            for seq in group:
                seq.outbox = self._outbox
            if group[0].should_stop:
                for seq in group:
                    self._finish(seq, "cancelled")
                continue
            try:
                self._start(model, batch, group)
            except CapmeshError as exc:
                self._fail(group, exc)
            except Exception:
                # Not yet rows of the batch, so the scheduler's own failure path would miss them.
                self._fail(group, Internal("the LLM engine failed while starting the request"))
                raise
        if admitted:
            self._tell_positions()
        self._set_running(len(batch.rows))

    def _tell_positions(self) -> None:
        """The queue moved: each waiting request hears its new place (the batch is still full)."""
        with self._cond:
            waiting = list(self._waiting)
        for position, group in enumerate(waiting):
            group[0].sink.deliver(Queued(position))

    def _start(self, model: ChatModel, batch: _Batch, group: list[_Sequence]) -> None:
        """Prefills the prompt once and chooses each choice's first token; a choice joins the batch
        unless that token ended it."""
        prompt = self._prepare(model, group)
        logits, cache = model.prefill(prompt)
        tokens = self._choose(model, logits.expand(len(group), -1).clone(), group)
        view = _CacheView.of(cache) if len(group) > 1 else None
        for seq, token in zip(group, tokens):
            if seq.finished:
                continue
            # The first choice to join takes the prefilled cache itself (the batch runs forwards
            # on it when it is alone); the others join with a view of its tensors.
            batch.add(seq, view if view is not None and batch.holds(cache) else cache, len(prompt), token)

    def _prepare(self, model: ChatModel, group: list[_Sequence]) -> list[int]:
        """Tokenizes the prompt and applies the checks that need the model (its context window)."""
        request = group[0].request
        window = model.context_window
        if request.max_tokens is not None and request.max_tokens >= window:
            raise InvalidArgument.single(
                "max_tokens", f"must be less than the model's context window of {window} tokens"
            )
        for token in request.logit_bias:
            if token >= model.vocab_size:
                raise InvalidArgument.single(
                    f"logit_bias[{token}]", f"must name a token of the model's vocabulary of {model.vocab_size}"
                )
        prompt = model.encode_prompt(request)
        if len(prompt) >= window:
            raise prompt_too_long(len(prompt), window)
        # Compiled on the first request with this format (the batch waits that once), then cached.
        fmt = request.response_format or constrained_format(request)
        for seq in group:
            seq.prompt_tokens = len(prompt)
            # An answer stops at the end of the context window (finish reason "length").
            seq.max_new_tokens = min(request.max_tokens or self.settings.default_max_tokens, window - len(prompt))
            # Siblings draw different answers: each has its own seed.
            seed = None if request.seed is None else (request.seed + seq.index) % (MAX_SEED + 1)
            seq.decoding = _Decoding(
                sampling=SamplingParams.for_request(request, seed, prompt, model.vocab_size, model.device),
                detokenizer=IncrementalDetokenizer(model.decode),
                stops=StopScanner(request.stop),
                grammar=model.grammars.matcher(fmt) if fmt else None,
                calls=_call_parser(request, model),
            )
        return prompt

    def _choose(self, model: ChatModel, logits: torch.Tensor, rows: list[_Sequence]) -> list[int]:
        """Each row's next token from its logits row (adjusted, masked, sampled), and takes it."""
        sampling = [seq.prepared.sampling for seq in rows]
        grammars = [seq.prepared.grammar for seq in rows]
        adjust_logits(logits, sampling)
        model.masker.apply(logits, grammars)
        tokens = choose_tokens(logits, sampling)
        # Once a grammar is complete its mask allows only EOS, which ends the answer in `_accept`.
        model.masker.accept(grammars, tokens)
        wanted = [i for i, seq in enumerate(rows) if seq.request.logprobs]
        if wanted:
            top = max(rows[i].request.top_logprobs for i in wanted)
            for i, step in zip(wanted, step_logprobs(logits, wanted, tokens, top)):
                alternatives = tuple(
                    _top_logprob(model, token, value)
                    for token, value in zip(step.top_ids[: rows[i].request.top_logprobs], step.top_logprobs)
                )
                text, raw = model.token_text(tokens[i])
                rows[i].logprobs.append(TokenLogprob(text, max(step.chosen, LOGPROB_FLOOR), raw, alternatives))
                rows[i].unsent_logprobs += 1
        for seq, token in zip(rows, tokens):
            seq.prepared.sampling.observe(token)
            self._accept(seq, token, model)
        return tokens

    def _decode(self, model: ChatModel, batch: _Batch) -> None:
        started = time.perf_counter()
        logits = model.decode_step(batch)
        tokens = self._choose(model, logits, batch.rows)
        done: list[int] = []
        for i, (seq, token) in enumerate(zip(batch.rows, tokens)):
            if seq.finished:
                done.append(i)
            else:
                batch.last_tokens[i] = token
                batch.positions[i] += 1
        if done:
            batch.keep([i for i in range(len(batch.rows)) if i not in set(done)])
        elapsed = time.perf_counter() - started
        self._step_seconds = elapsed if not self._steps else 0.9 * self._step_seconds + 0.1 * elapsed
        self._steps += 1
        if done:
            self._set_running(len(batch.rows))

    def _accept(self, seq: _Sequence, token: int, model: ChatModel) -> None:
        """Takes one generated token: streams its text and finishes the request when it should end."""
        seq.completion_tokens += 1
        self._tokens += 1
        if token in model.eos_ids:
            self._finish(seq, "stop")
            return
        decoding = seq.prepared
        seq.emit(decoding.stops.feed(decoding.detokenizer.push(token)))
        if decoding.stops.stopped:
            self._finish(seq, "stop")
        elif seq.completion_tokens >= seq.max_new_tokens:
            self._finish(seq, "length")

    def _retire(self, batch: _Batch, indices: list[int], reason: FinishReason) -> None:
        if not indices:
            return
        for i in indices:
            self._finish(batch.rows[i], reason)
        batch.keep([i for i in range(len(batch.rows)) if i not in set(indices)])
        self._set_running(len(batch.rows))

    def _finish(self, seq: _Sequence, reason: FinishReason) -> None:
        if seq.finished:
            return
        seq.finished = True
        decoding = seq.decoding  # None when the request ends before its prompt was prepared
        if reason != "cancelled" and decoding is not None:
            text = "" if decoding.stops.stopped else decoding.stops.feed(decoding.detokenizer.flush())
            if not decoding.stops.stopped:
                text += decoding.stops.flush()
            seq.emit(text, final=True)
        calls = decoding.calls.result() if decoding is not None and decoding.calls is not None else ()
        result = ChatResult(
            text="".join(seq.text_parts),
            finish_reason="tool_calls" if calls and reason == "stop" else reason,
            prompt_tokens=seq.prompt_tokens,
            completion_tokens=seq.completion_tokens,
            model=seq.model_name,
            index=seq.index,
            tool_calls=calls,
            logprobs=tuple(seq.logprobs),
            random_weights=self.models.random_weights(),
        )
        seq.deliver(result)
        self.log_finished(result, seq.submitted_at)

    def _set_running(self, rows: int) -> None:
        with self._cond:
            self._running = rows
            self._cond.notify_all()

    def _take_waiting(self) -> list[_Sequence]:
        with self._cond:
            taken = [seq for group in self._waiting for seq in group]
            self._waiting.clear()
            self._cond.notify_all()
            return taken

    @staticmethod
    def _fail(seqs: list[_Sequence], error: CapmeshError) -> None:
        for seq in seqs:
            if not seq.finished:
                seq.finished = True
                seq.deliver(error)
