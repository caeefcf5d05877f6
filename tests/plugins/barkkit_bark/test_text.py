"""Bark's tokenizer on the real vocabulary, and long text generated sentence by sentence (never cut)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from barkkit.errors import PipelineError
from barkkit.pipeline import load_pipeline
from barkkit_bark.text import MAX_TEXT_TOKENS, TextTokenizer, split_sentences

TEXTS = [
    "Hello, my name is Suno. And, uh — and I like pizza. [laughs] But I also have other interests.",
    "  Spaces\tand\n\nnewlines   are   normalised  ",
    "Ich möchte gern ein Stück Kuchen, bitte! Straße, Übermut, Ärger.",
    "¿Dónde está la biblioteca? Él dijo: «¡Ay, caramba!»",
    "Je m'appelle Élodie ; ça va très bien, merci…",
    "你好，世界。我喜欢吃披萨！今天天气怎么样？",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "안녕하세요, 만나서 반갑습니다.",
    "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।",
    "Привет, как дела? Всё хорошо, спасибо.",
    "Cześć! Zażółć gęślą jaźń. Merhaba, nasılsın? Ciao, come stai? Olá, tudo bem?",
    "♪ In the jungle, the mighty jungle ♪ 😀 👍🏽 — 3.14159 $100 50% #hashtag @user e-mail@example.com",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ and ﬁ ligatures, combining e\u0301 and \u00e9, zero\u200bwidth, tab\tend.",
]


@pytest.fixture(scope="module")
def tokenizer(vocab_file: Path) -> TextTokenizer:
    return TextTokenizer(vocab_file)


@pytest.mark.filterwarnings("ignore:Bark's tokenizer does not know")  # full-width letters: said, and read as [UNK]
@pytest.mark.parametrize("text", TEXTS)
def test_tokenizes_exactly_as_the_reference(text: str, tokenizer: TextTokenizer, vocab_file: Path) -> None:
    import bark.generation as reference
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    # Bark's _normalize_whitespace and _tokenize with the tokenizer it was written against (transformers'
    # original Python BertTokenizer, cased; transformers 5 calls it BertTokenizerLegacy), plus the text offset.
    normalized = reference._normalize_whitespace(text)
    original = BertTokenizerLegacy(vocab_file=str(vocab_file), do_lower_case=False)
    expected = (np.array(reference._tokenize(original, normalized)) + reference.TEXT_ENCODING_OFFSET).tolist()
    pieces = tokenizer.pieces(text)
    assert len(pieces) == 1 and pieces[0].ids == expected and pieces[0].text == normalized
    assert 0 < len(expected) <= MAX_TEXT_TOKENS


def test_agrees_with_todays_bert_tokenizer_except_on_decomposed_accents(tokenizer: TextTokenizer, vocab_file: Path, tmp_path: Path) -> None:
    """transformers 5's BertTokenizer (what bark's from_pretrained now builds) differs only on combining marks."""
    from transformers import BertTokenizer

    (tmp_path / "vocab.txt").write_bytes(vocab_file.read_bytes())
    current = BertTokenizer.from_pretrained(tmp_path, do_lower_case=False)
    for text in TEXTS[:-1]:
        assert [i + 10_048 for i in current.encode(" ".join(text.split()), add_special_tokens=False)] == tokenizer.encode(" ".join(text.split()))
    decomposed = "caf" + "e\u0301"
    assert tokenizer.encode(decomposed) != [i + 10_048 for i in current.encode(decomposed, add_special_tokens=False)]


def test_sentence_splitting() -> None:
    assert split_sentences("One. Two! Three? «Four.» Five… Six") == ["One.", "Two!", "Three?", "«Four.»", "Five…", "Six"]
    assert split_sentences("你好。世界！好吗？") == ["你好。", "世界！", "好吗？"]
    assert split_sentences("मैं ठीक हूँ। आप?") == ["मैं ठीक हूँ।", "आप?"]


def _long_text() -> str:
    sentences = [
        "The quick brown fox jumps over the lazy dog while the orchestra tunes its many instruments nearby.",
        "Meanwhile, in a distant galaxy, astronomers catalogued thousands of previously unknown variable stars.",
        "我们今天去公园散步，看到了很多美丽的花朵和快乐的孩子们在草地上玩耍。",
        "Die Wissenschaftler untersuchten die Auswirkungen des Klimawandels auf die alpinen Ökosysteme sehr genau.",
        "After lunch, everyone gathered in the courtyard to listen to the old storyteller's extraordinary tales.",
        "Finally, the committee approved the proposal unanimously, and the celebration lasted well into the night.",
    ]
    return " ".join(sentences * 2)


def test_long_text_is_split_on_sentences_never_cut(tokenizer: TextTokenizer) -> None:
    text = _long_text()
    whole = tokenizer.encode(text)
    assert len(whole) > MAX_TEXT_TOKENS
    pieces = tokenizer.pieces(text)
    assert len(pieces) == 12 and all(len(piece.ids) <= MAX_TEXT_TOKENS for piece in pieces)
    assert [token for piece in pieces for token in piece.ids] == whole  # nothing dropped, nothing added


def test_a_sentence_too_long_to_split_is_a_clear_error(tokenizer: TextTokenizer) -> None:
    sentence = " ".join(["word"] * 300) + "."
    with pytest.raises(PipelineError, match=r"sentence 2 of 2 is 301 tokens long, more than the 256 Bark reads at once"):
        tokenizer.pieces("Short first sentence. " + sentence)


def test_words_the_tokenizer_reads_as_unknown_are_announced(tokenizer: TextTokenizer) -> None:
    text = "Hello there, " + "a" * 120 + " and ꙮ."
    with pytest.warns(UserWarning, match=r"does not know 2 word\(s\) of the text and reads each as \[UNK\]: "
                                         r"'aaaaaaaaaaaaaaaaa\.\.\.', 'ꙮ'$"):
        pieces = tokenizer.pieces(text)
    assert pieces[0].ids == tokenizer.encode(text)  # read as Suno's code reads them: nothing else changes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # symbols Bark's training text had as [UNK] too are no news
        tokenizer.pieces("Plain words, naïve accents and 日本語 are known; ♪ 🦜 — … are symbols.")


@pytest.mark.parametrize("with_voice", [True, False])
def test_long_text_matches_the_reference_piece_by_piece(
    with_voice: bool, tokenizer: TextTokenizer, suno_folder: Path, reference, voice_file: Path
) -> None:
    """The reference run sentence by sentence on one generator (the long-form notebook's recipe) is what we make."""
    import torch

    text = _long_text()
    voice = str(voice_file) if with_voice else None
    options = dict(max_gen_duration_s=0.25, min_eos_p=0.05)
    with reference.installed() as g:
        torch.manual_seed(11)
        history, parts = voice, []
        for piece in tokenizer.pieces(text):
            tokens = g.generate_text_semantic(piece.text, history_prompt=history, silent=True, use_kv_caching=True, **options)
            parts.append(tokens)
            if voice is None and len(tokens):  # no voice: continue from the previous sentence's tokens
                history = {"semantic_prompt": tokens, "coarse_prompt": np.zeros((2, 0), int), "fine_prompt": np.zeros((8, 0), int)}
        semantic = np.concatenate(parts)
        coarse = g.generate_coarse(semantic, history_prompt=voice, silent=True, use_kv_caching=True)
        fine = g.generate_fine(coarse, history_prompt=voice, silent=True)

    generation = load_pipeline(suno_folder, decoder=False).generate(text, voice=voice, seed=11, **options)
    assert len(parts) == 12 and len(semantic) > 12
    np.testing.assert_array_equal(generation.semantic.array, semantic)
    np.testing.assert_array_equal(generation.coarse.array, coarse)
    np.testing.assert_array_equal(generation.fine.array, fine)
