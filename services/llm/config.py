"""The LLM service's settings, read from `CAPMESH_LLM_*` variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass

from capmesh.services.runtime.settings import ServerSettings, check

ENGINES = ("transformers", "openai")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")

ENV_PREFIX = "LLM"  # settings come from CAPMESH_LLM_* variables


@dataclass(frozen=True)
class LlmSettings(ServerSettings):
    # Streams are cheap while they wait on the batch, so the server admits many more calls at once
    # than a one-call-per-slot capability; the engine's own queue is what bounds the work.
    max_concurrency: int = 64
    engine: str = "transformers"
    model: str = "tiny"  # "tiny", a local folder or a hub id
    device: str = "auto"
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on CUDA where supported
    max_batch_size: int = 16  # requests decoded together in one step
    torch_threads: int = 0  # CPU threads per op; 0: 1 for small models on CPU, else torch's default
    max_waiting: int = 64  # requests waiting for a batch slot; beyond it RESOURCE_EXHAUSTED
    max_context: int = 0  # 0: the model's own context window
    default_max_tokens: int = 256  # when a request leaves max_tokens unset
    max_stop_sequences: int = 4
    max_choices: int = 8  # the largest `n`: answers decoded for one prompt, each a row of the batch
    stream_interval_ms: float = 10.0  # deltas closer together than this are sent as one message
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = ""
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = 60.0
    openai_max_retries: int = 3
    openai_backoff_base_s: float = 0.5  # first retry waits up to this long, doubling each time
    openai_context: int = 128_000  # the remote model's context window, for validation

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.engine in ENGINES, "engine", self.engine, f"must be one of {', '.join(ENGINES)}")
        check(self.device in DEVICES, "device", self.device, f"must be one of {', '.join(DEVICES)}")
        check(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {', '.join(DTYPES)}")
        check(bool(self.model.strip()), "model", self.model, "must name a model")
        check(self.max_batch_size >= 1, "max_batch_size", self.max_batch_size, "must be at least 1")
        check(self.torch_threads >= 0, "torch_threads", self.torch_threads, "must be 0 (automatic) or more")
        check(self.max_waiting >= 0, "max_waiting", self.max_waiting, "must be 0 or more")
        check(self.max_context >= 0, "max_context", self.max_context, "must be 0 (the model's window) or more")
        check(self.default_max_tokens >= 1, "default_max_tokens", self.default_max_tokens, "must be at least 1")
        check(self.stream_interval_ms >= 0, "stream_interval_ms", self.stream_interval_ms, "must be 0 or more")
        check(self.max_choices >= 1, "max_choices", self.max_choices, "must be at least 1")
        check(self.max_stop_sequences >= 0, "max_stop_sequences", self.max_stop_sequences, "must be 0 or more")
        check(self.openai_timeout_s > 0, "openai_timeout_s", self.openai_timeout_s, "must be greater than 0")
        check(self.openai_max_retries >= 0, "openai_max_retries", self.openai_max_retries, "must be 0 or more")
        check(self.openai_backoff_base_s >= 0, "openai_backoff_base_s", self.openai_backoff_base_s, "must be 0 or more")
        check(self.openai_context >= 1, "openai_context", self.openai_context, "must be at least 1")
        if self.engine == "openai":
            check(
                self.openai_base_url.startswith(("http://", "https://")),
                "openai_base_url",
                self.openai_base_url,
                "must be an http:// or https:// URL",
            )
            check(bool(self.openai_model), "openai_model", self.openai_model, "must name the remote model")

    def __repr__(self) -> str:  # the API key is a secret
        shown = {k: v for k, v in self.__dict__.items() if k != "openai_api_key"}
        shown["openai_api_key"] = "***" if self.openai_api_key else ""
        return f"LlmSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"
