"""Text side of text-to-image retrieval: tokenizers, pluggable text encoders and IRRA's cross-modal MLM."""

from saip_bench.tasks.text.encoders import TEXT_ENCODERS, TextSide, build_text_side
from saip_bench.tasks.text.tokenizer import WordTokenizer

__all__ = ["TEXT_ENCODERS", "TextSide", "WordTokenizer", "build_text_side"]
