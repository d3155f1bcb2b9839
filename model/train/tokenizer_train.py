"""Train a byte-level BPE tokenizer (the GPT-2 / Llama-3 / SmolLM scheme) and wrap it as an Ember `Tokenizer`.

Byte-level means every string encodes (no unknown tokens): the 256 byte symbols are the initial alphabet.
The special tokens and the ChatML template match SmolLM2's, so chat code treats both model families alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from ember.model.errors import ConfigError
from ember.model.tokenizer import Tokenizer

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE of `vocab_size` entries (specials included) learned from `texts` (streamed)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < MIN_VOCAB:
        raise ConfigError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least {MIN_VOCAB}")
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend=backend, chat_template=CHATML_TEMPLATE,
                     special={"bos_token": IM_START, "eos_token": IM_END, "unk_token": ENDOFTEXT,
                              "pad_token": ENDOFTEXT},
                     model_max_length=2048)


def document_separator(tokenizer: Tokenizer) -> int:
    """The id put between packed documents: `<|endoftext|>` when the vocabulary has it, else EOS."""
    sep = tokenizer.token_id(ENDOFTEXT)
    if sep is None:
        sep = tokenizer.eos_token_id
    if sep is None:
        raise ConfigError("the tokenizer has neither <|endoftext|> nor an EOS token to separate documents")
    return sep
