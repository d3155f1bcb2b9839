"""`Tokenizer`: a `tokenizers` backend plus the special tokens and chat template a model ships with.

Reads and writes the HF files (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`) so an
exported folder loads in `transformers` with the same ids and the same chat text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend

from ember.model.chat_template import Message, render_chat
from ember.model.errors import WeightsError

SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass
class Tokenizer:
    backend: Backend
    chat_template: str | None = None
    special: dict[str, str | None] = field(default_factory=dict)  # bos_token, eos_token, unk_token, pad_token
    add_bos_token: bool = False
    add_eos_token: bool = False
    model_max_length: int = 8192

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self.token_id(self.special.get("bos_token"))

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id(self.special.get("eos_token"))

    @property
    def pad_token_id(self) -> int | None:
        return self.token_id(self.special.get("pad_token"))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            if self.add_bos_token and self.bos_token_id is not None:
                ids = [self.bos_token_id, *ids]
            if self.add_eos_token and self.eos_token_id is not None:
                ids = [*ids, self.eos_token_id]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(ids, skip_special_tokens=skip_special_tokens))

    def apply_chat_template(self, messages: list[Message], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None) -> str:
        """Prompt text for a conversation; with no template, a plain `role: content` transcript."""
        if self.chat_template is None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return text + ("assistant: " if add_generation_prompt else "")
        specials = {k: v for k, v in self.special.items() if v is not None}
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           tools=tools, **specials)

    # ---- HF files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path) -> Tokenizer:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file() and (folder / "model.gguf").is_file():  # a pulled model: the GGUF's own tokenizer
            from ember.model.weights.gguf import GGUFFile, tokenizer_from_gguf

            return tokenizer_from_gguf(GGUFFile(folder / "model.gguf"))
        if not path.is_file():
            raise WeightsError(folder, "no tokenizer.json in this folder",
                               hint="Ember reads fast-tokenizer folders (tokenizer.json), as HF models ship.")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # the Rust error type is not exported
            raise WeightsError(path, f"cannot parse tokenizer.json ({e})") from e
        cfg: dict[str, Any] = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise WeightsError(cfg_path, f"not valid JSON ({e})") from e
        template = cfg.get("chat_template")
        jinja_path = folder / "chat_template.jinja"
        if template is None and jinja_path.is_file():
            template = jinja_path.read_text(encoding="utf-8")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), None)

        def token(v: Any) -> str | None:
            return v.get("content") if isinstance(v, dict) else v

        return cls(
            backend=backend,
            chat_template=template,
            special={name: token(cfg.get(name)) for name in SPECIAL_NAMES},
            add_bos_token=bool(cfg.get("add_bos_token", False)),
            add_eos_token=bool(cfg.get("add_eos_token", False)),
            model_max_length=int(min(cfg.get("model_max_length", 8192), 10**9)),
        )

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.backend.save(str(folder / "tokenizer.json"))
        specials = {k: v for k, v in self.special.items() if v is not None}
        cfg = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length,
            "chat_template": self.chat_template,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
