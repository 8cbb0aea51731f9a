"""Shared helpers of the pack and loader tests: tokenizer folders and small corpora."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.chat_templates import trl_template

LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
]


def default_tokenizer_dir() -> Path:
    from synth.llm.default_model import prepare_default_model

    return prepare_default_model()


def tokenizer_with_template(src: Path, dest: Path, template: str) -> Path:
    """The embedded model's tokenizer (49K) with another model family's chat template
    (and, for Llama, its special tokens), saved as a folder `synth pack` can load."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    tok.chat_template = trl_template(template)
    if template.startswith("llama"):
        tok.add_special_tokens({"additional_special_tokens": LLAMA_SPECIALS})
        tok.eos_token = "<|eot_id|>"
        tok.bos_token = "<|begin_of_text|>"
    elif template.startswith("qwen"):
        tok.eos_token = "<|im_end|>"
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(dest))
    return dest


def chat(i: int, domain: str = "math") -> dict:
    return {
        "id": f"chat-{i}",
        "domain": domain,
        "kind": "instruction",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
        ],
    }


def text(i: int, words: int, domain: str = "general") -> dict:
    return {
        "id": f"text-{i}",
        "domain": domain,
        "kind": "passage",
        "text": " ".join(f"word{(i * 7 + j) % 97}" for j in range(words)) + ".",
    }


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest
