"""A deterministic word-level tokenizer built from the training captions.

Why our own: the default text encoder is trained from scratch, so it needs no BPE merges file (nothing
to download); a vocabulary of the training words, ordered by (-count, word), is reproducible from the
data alone and is saved next to the predictions.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from saip_bench.errors import DataFormatError

WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")
PAD, SOS, EOS, UNK = range(len(SPECIALS))


def words(text: str) -> list[str]:
    """Lower-cased words, numbers and single punctuation marks."""
    return WORD.findall(text.lower())


class WordTokenizer:
    """Maps captions to fixed-length id tensors: ``<sos> w1 ... wn <eos> <pad>...`` (truncated to fit)."""

    def __init__(self, vocabulary: Sequence[str], max_length: int = 77) -> None:
        if list(vocabulary[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        if max_length < 3:
            raise ValueError("max_length must leave room for <sos>, one word and <eos>")
        self.vocabulary = list(vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.max_length = int(max_length)

    @classmethod
    def from_captions(
        cls, captions: Iterable[str], max_length: int = 77, min_count: int = 1, max_size: int | None = None
    ) -> WordTokenizer:
        counts = Counter(word for caption in captions for word in words(caption))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *ranked], max_length)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def encode(self, caption: str) -> list[int]:
        ids = [self.index.get(word, UNK) for word in words(caption)][: self.max_length - 2]
        return [SOS, *ids, EOS] + [PAD] * (self.max_length - 2 - len(ids))

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.encode(c) for c in captions], dtype=torch.long)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"max_length": self.max_length, "vocabulary": self.vocabulary}))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["vocabulary"], data["max_length"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataFormatError(
                path, "a saved WordTokenizer JSON {max_length, vocabulary}", str(exc)
            ) from exc
