"""Text for the semantic stage: Bark's tokenizer, its whitespace normalisation, and splitting long text.

Bark reads at most 256 text tokens at a time (``MAX_TEXT_TOKENS``); Suno's code silently drops the rest. barkkit
splits a longer text on sentence boundaries instead and generates it piece by piece (see
``barkkit_bark.semantic``); a single sentence longer than the window is an error that says how long it is. Words
the tokenizer does not know (over 100 characters, unknown scripts) are read as ``[UNK]``, as Suno's code reads
them, with a warning; a text with no known token at all is an error.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from barkkit.constants import TEXT_ENCODING_OFFSET, TEXT_PAD_TOKEN
from barkkit.errors import TextError, WeightsError
from barkkit.files import check_input_file

__all__ = ["MAX_TEXT_TOKENS", "TextTokenizer", "normalize_whitespace", "split_sentences", "TextPiece"]

MAX_TEXT_TOKENS = 256
"""Text tokens the semantic model reads in one generation."""

MAX_VOCAB_SIZE = TEXT_PAD_TOKEN - TEXT_ENCODING_OFFSET
"""Entries a vocabulary may hold: its ids, offset by 10,048, must stay below the text model's padding id (Bark's
bert-base-multilingual-cased vocabulary holds exactly 119,547)."""

# A sentence ends at . ! ? … (optionally followed by closing quotes/brackets) before whitespace, or right after
# the full-width and Indic marks, which are not followed by a space in Chinese, Japanese or Hindi text.
_SENTENCE_END = re.compile(r"(?<=[.!?…][\"'”’»)\]])\s+|(?<=[.!?…])\s+|(?<=[。！？।॥])\s*")


def normalize_whitespace(text: str) -> str:
    """Bark's ``_normalize_whitespace``: runs of whitespace become one space; the ends are stripped."""
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Split normalised text into sentences (at . ! ? … and 。！？। followed by space or not)."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


@dataclass(frozen=True)
class TextPiece:
    """One generation's worth of text: the sentence(s) and their token ids (offset by 10,048, unpadded)."""

    text: str
    ids: list[int]


def _bert_tokenizer(vocab_file: Path) -> object:
    """transformers' original Python BertTokenizer, cased: the tokenizer Bark was written against.

    transformers 5 renamed it ``BertTokenizerLegacy`` and made ``BertTokenizer`` the Rust-backed one, which splits
    decomposed accents ("e" + U+0301) differently; transformers 4's ``BertTokenizer`` is the original.
    """
    try:
        from transformers.models.bert.tokenization_bert_legacy import (
            BertTokenizerLegacy as Original,
        )
    except ImportError:
        from transformers import BertTokenizer as Original
    return Original(vocab_file=str(vocab_file), do_lower_case=False)


class TextTokenizer:
    """Bark's tokenizer: ``bert-base-multilingual-cased`` WordPiece, cased, no special tokens, ids + 10,048."""

    def __init__(self, vocab_file: str | os.PathLike) -> None:
        vocab_file = check_input_file(vocab_file, "vocabulary file", WeightsError)
        try:
            with open(vocab_file, encoding="utf-8") as lines:
                entries = [line.rstrip("\n") for line in lines]
        except UnicodeDecodeError as exc:
            raise WeightsError(f"{vocab_file}: not a UTF-8 text vocabulary ({exc.reason} at byte {exc.start})") from None
        if not any(entry.strip() for entry in entries):
            raise WeightsError(f"{vocab_file}: the vocabulary is empty; it must be Bark's bert-base-multilingual-cased "
                               f"vocab.txt ({MAX_VOCAB_SIZE:,} entries, one per line)")
        if "[UNK]" not in entries:  # without it, every unknown word would silently become id 0
            raise WeightsError(f"{vocab_file}: the vocabulary has no [UNK] entry; not a WordPiece vocab.txt such as "
                               "Bark's bert-base-multilingual-cased one")
        if len(entries) > MAX_VOCAB_SIZE:
            raise WeightsError(f"{vocab_file}: the vocabulary holds {len(entries):,} entries, more than the "
                               f"{MAX_VOCAB_SIZE:,} Bark's text model has ids for")
        self.tokenizer = _bert_tokenizer(vocab_file)
        if len(self.tokenizer) < len(entries):  # a constructor that silently fell back to an empty vocabulary
            raise WeightsError(f"{vocab_file}: the tokenizer read {len(self.tokenizer)} of {len(entries)} vocabulary entries")
        self.vocab_file = vocab_file

    def encode(self, text: str) -> list[int]:
        """Normalised ``text`` -> the semantic model's text ids (WordPiece ids + 10,048), unpadded and uncut."""
        return [token + TEXT_ENCODING_OFFSET for token in self.tokenizer.encode(text, add_special_tokens=False)]

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` (with a letter or digit) that Bark's tokenizer reads as ``[UNK]``: words over 100
        characters, letters of scripts its vocabulary lacks. The model hears nothing of what they say.

        Symbols and punctuation it lacks (emoji, "—", "…") are left out: they were ``[UNK]`` in Bark's training text
        too, where the token carries what the model learned of them."""
        tokenizer = self.tokenizer
        basic, wordpiece = getattr(tokenizer, "basic_tokenizer", None), getattr(tokenizer, "wordpiece_tokenizer", None)
        if basic is None or wordpiece is None:
            return []
        return [word for word in basic.tokenize(text)
                if any(c.isalnum() for c in word) and tokenizer.unk_token in wordpiece.tokenize(word)]

    def pieces(self, text: str, max_tokens: int = MAX_TEXT_TOKENS) -> list[TextPiece]:
        """The text in pieces of at most ``max_tokens`` ids: the whole text when it fits, else one per sentence.

        Long text is read sentence by sentence, as Suno's long-form notebook does, so each generation speaks a
        sentence (Bark speaks at most about 15 s per generation). A sentence longer than ``max_tokens`` cannot be
        split at a sentence boundary: ``TextError`` says which one and how long it is. Text in which the tokenizer
        knows nothing (only emoji, or a script its vocabulary lacks) is a ``TextError`` too: the model would hear
        nothing of it. Each ``TextError`` carries the text given, for callers that run many.
        """
        given, text = text, normalize_whitespace(text)
        if not text:
            raise TextError("text is empty; give some words to speak", given)
        ids = self.encode(text)
        unk = self.tokenizer.unk_token_id + TEXT_ENCODING_OFFSET
        if not ids or all(token == unk for token in ids):  # emoji, unknown scripts, control characters only
            preview = text if len(text) <= 40 else text[:37] + "..."
            raise TextError(f"Bark's tokenizer knows nothing in the text {preview!r} (it reads "
                            f"{'all of it as [UNK]' if ids else 'no tokens in it'}); give words in a language "
                            "Bark speaks", given)
        unknown = self.unknown_words(text) if unk in ids else []
        if unknown:  # read as [UNK], as in Suno's code; said, not silent
            shown = ", ".join(repr(word if len(word) <= 20 else word[:17] + "...") for word in unknown[:5])
            warnings.warn(f"Bark's tokenizer does not know {len(unknown)} word(s) of the text and reads each as "
                          f"[UNK]: {shown}{', ...' if len(unknown) > 5 else ''}", UserWarning, stacklevel=2)
        if len(ids) <= max_tokens:
            return [TextPiece(text, ids)]
        pieces = []
        sentences = split_sentences(text)
        for number, sentence in enumerate(sentences, 1):
            sentence_ids = self.encode(sentence)
            if len(sentence_ids) > max_tokens:
                preview = sentence if len(sentence) <= 60 else sentence[:57] + "..."
                raise TextError(
                    f"sentence {number} of {len(sentences)} is {len(sentence_ids)} tokens long, more than the "
                    f"{max_tokens} Bark reads at once ({preview!r}); split it into shorter sentences", given
                )
            if sentence_ids:
                pieces.append(TextPiece(sentence, sentence_ids))
        return pieces
