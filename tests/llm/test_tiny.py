"""The tiny checkpoint: built with save_pretrained, loaded through the real from_pretrained code."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from capmesh.services.llm.tiny import EOS_TOKEN
from capmesh.services.runtime.tiny import is_random_checkpoint


def test_tiny_checkpoint_loads_with_from_pretrained(tiny_llm_path):
    assert is_random_checkpoint(tiny_llm_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_path)
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == EOS_TOKEN
    generation = json.loads((tiny_llm_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id
    ids = torch.tensor([tokenizer("hello")["input_ids"]])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_tokenizer_round_trips_multibyte_text_and_has_a_chat_template(tiny_llm_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_path)
    text = "Grüße, 世界 🙂 — naïve"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # Some characters must be split across tokens, or the streaming tests would prove nothing.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert prompt.count(EOS_TOKEN) == 2
