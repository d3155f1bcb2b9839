"""Incremental detokenization with stop strings, per sequence.

Text is decoded over a sliding window (vLLM's prefix/read offsets), so each step costs O(window), and a
partial UTF-8 character is held back until it completes. Stop strings are matched on text, so a stop
split across tokens is found; while the tail of the text could still become a stop string, that tail is
held back from the stream.
"""

from __future__ import annotations

from ember.model.tokenizer import Tokenizer


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # all decoded text (stop string and what follows removed once found)
        self.emitted = 0  # chars of `text` already streamed

    def add(self, token: int) -> bool:
        """Add one generated (non-stop) token; True if a stop string was found (text is cut before it)."""
        self.ids.append(token)
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset])
        new = dec(self.ids[self.prefix_offset:])
        if len(new) > len(prefix) and not new.endswith("\ufffd"):
            delta = new[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        else:
            return False
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += delta
        for s in self.stop:
            i = self.text.find(s, start)
            if i != -1:
                self.text = self.text[:i]
                return True
        return False

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def pop_delta(self, final: bool = False) -> str:
        """New text safe to stream now (everything, when `final`)."""
        end = len(self.text) if final else len(self.text) - self._held_back()
        if end <= self.emitted:
            return ""
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
