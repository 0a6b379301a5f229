"""The LLM's tiny checkpoint: a 2-layer Llama with a byte-level BPE tokenizer trained here.

No weights can be downloaded, so tests and the offline profile serve this random model through
the real `from_pretrained` code. The tokenizer is byte-level, so any UTF-8 text round-trips and
characters outside the small vocabulary are split into several byte tokens: exactly the case that
streaming must handle (a character whose bytes arrive in different tokens).
"""

from __future__ import annotations

from pathlib import Path

from capmesh.services.runtime.tiny import ensure_tiny

TINY_NAME = "llm-tools"  # the checkpoint's chat template knows tools since this name

EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", EOS_TOKEN]

# ChatML, the format most open chat models use; the generation prompt opens the assistant turn.
# With `tools` it is Qwen's / Hermes' tool format: the tools as JSON in the system message, calls
# as `<tool_call>` JSON in assistant turns, tool results as `<tool_response>` in user turns (the
# format `services/llm/tools.py` parses). Without tools it renders exactly plain ChatML.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions. Their signatures are within <tools></tools>:\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools>\\n\\nFor each call, return a JSON object with the function name and arguments within "
    "<tool_call></tool_call> tags.<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] %}"
    "{{ '<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' }}"
    "{{ call['function']['arguments'] | tojson }}{{ '}\\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Several scripts so that the trained merges cover some multi-byte characters and leave others
# split into bytes.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. A language model predicts the next token.",
    "system user assistant: you are a helpful assistant. Hello! How can I help you today?",
    "Streaming sends text deltas as tokens are produced, then a final message with usage.",
    "Continuous batching lets requests join and leave the running batch between steps.",
    "Café, crème brûlée, naïve façade, déjà vu, à bientôt, où est la gare ?",
    "Grüße aus München, Straße, schön, Mädchen, Übung macht den Meister.",
    "Привет, как дела? Хорошо, спасибо. Москва, Санкт-Петербург.",
    "こんにちは、世界。今日はいい天気ですね。ありがとうございます。",
    "你好，世界。我们今天学习机器学习和语言模型。谢谢！",
    "안녕하세요, 만나서 반갑습니다.",
    "Emoji: 🙂 😀 🚀 ✨ 🎉 👍 — dashes – and “quotes” … ellipsis",
    "0123456789 + - * / = ( ) [ ] { } < > # @ & % $ ! ? , ; : ' \" \\ | ~ ^ _ `",
]


def tiny_path() -> Path:
    """The tiny checkpoint in the machine's cache, built on first use."""
    return ensure_tiny(TINY_NAME, build_tiny)


def build_tiny(dest: Path) -> None:
    """Writes the tiny chat model (random weights) and its tokenizer to `dest` with save_pretrained."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(dest)

    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        # Wider than the usual 0.02 so that random logits are well separated: greedy decoding then
        # picks the same token whatever the batch shape (float rounding differs between shapes).
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, max_new_tokens=64, do_sample=False
    )
    model.save_pretrained(dest)


def build_tokenizer():
    """Trains a byte-level BPE on the built-in corpus and wraps it as a chat tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
