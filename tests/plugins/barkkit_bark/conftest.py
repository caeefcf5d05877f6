"""Tiny random Bark models in both weight formats, and Suno's reference code loaded with the same weights.

The models have the real vocabulary sizes (text model 129,600 in / 10,048 out, coarse 12,096, fine 1,056) and
2 layers of width 32, so a whole three-stage run takes well under a second. The text model's end-of-sequence
row is scaled up so that generations do stop early now and then, which the early-stop tests need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from barkkit.weights import numpy_scalar_globals
from barkkit_bark.checkpoints import save_suno_checkpoint, save_transformers_checkpoint
from barkkit_bark.model import GPT, FineGPT, GPTConfig
from tests.conftest import PROMPTS_DIR, VOCAB_FILE

TEXT_CONFIG = dict(input_vocab_size=129_600, output_vocab_size=10_048)
COARSE_CONFIG = dict(input_vocab_size=12_096, output_vocab_size=12_096)
FINE_CONFIG = dict(input_vocab_size=1_056, output_vocab_size=1_056, n_codes_total=8, n_codes_given=1)
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=1024, bias=False)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run several times faster on one thread (no thread hand-off per operation) on 2 cores.

    Set per test and restored after it, so the rest of the suite keeps torch's default.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize(model: torch.nn.Module, seed: int, *, std: float = 0.1, head_std: float = 0.5) -> None:
    """Random weights, large enough that the tiny models' distributions are not flat."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim == 2:  # linear layers and embeddings
                parameter.copy_(noise * (head_std if "lm_head" in name else std))
            elif name.endswith("weight"):  # layer norm gains
                parameter.copy_(1.0 + 0.1 * noise)
            else:  # biases
                parameter.copy_(0.1 * noise)


def tiny_models(seed: int = 0, **overrides: Any) -> tuple[GPT, GPT, FineGPT]:
    settings = {**TINY, **overrides}
    text = GPT(GPTConfig(**settings, **TEXT_CONFIG)).eval()
    coarse = GPT(GPTConfig(**settings, **COARSE_CONFIG)).eval()
    fine = FineGPT(GPTConfig(**settings, **FINE_CONFIG)).eval()
    randomize(text, seed)
    randomize(coarse, seed + 1)
    randomize(fine, seed + 2, head_std=0.3)
    with torch.no_grad():
        text.lm_head.weight[10_000] *= 3.0  # the end-of-sequence logit: make early stops happen (with a voice)
    return text, coarse, fine


def write_vocab(folder: Path) -> Path:
    """The real vocabulary when the shared data is there, else a small WordPiece vocabulary of letters."""
    target = folder / "vocab.txt"
    if VOCAB_FILE.is_file():
        target.write_bytes(VOCAB_FILE.read_bytes())
    else:
        letters = [chr(c) for c in range(33, 127)]
        target.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters)]) + "\n")
    return target


@pytest.fixture(scope="session")
def models() -> tuple[GPT, GPT, FineGPT]:
    return tiny_models()


def write_suno_folder(folder: Path, models: tuple[GPT, GPT, FineGPT], **save_options: Any) -> Path:
    """``models`` in Suno's format (text.pt, coarse.pt, fine.pt: the small-model names) and vocab.txt, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in zip(("text.pt", "coarse.pt", "fine.pt"), models, strict=True):
        save_suno_checkpoint(folder / name, model, **save_options)
    write_vocab(folder)
    return folder


@pytest.fixture(scope="session")
def suno_folder(tmp_path_factory: pytest.TempPathFactory, models: tuple[GPT, GPT, FineGPT]) -> Path:
    """Suno's format: text.pt, coarse.pt, fine.pt (the small-model names) and vocab.txt."""
    return write_suno_folder(tmp_path_factory.mktemp("suno"), models, best_val_loss=2.5)


@pytest.fixture(scope="session")
def transformers_folder(tmp_path_factory: pytest.TempPathFactory, models: tuple[GPT, GPT, FineGPT]) -> Path:
    """transformers' BarkModel format (written by BarkModel.save_pretrained), with a tiny codec, and vocab.txt."""
    from transformers import EncodecConfig

    folder = tmp_path_factory.mktemp("transformers")
    codec = EncodecConfig(hidden_size=8, num_filters=4, codebook_size=1024, codebook_dim=8, num_lstm_layers=1)
    save_transformers_checkpoint(folder, *models, codec_config=codec)
    write_vocab(folder)
    return folder


@pytest.fixture(scope="session")
def voice_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Bark preset (v2/en_speaker_6) when the shared data is there, else a random voice of the same shape."""
    real = PROMPTS_DIR / "v2" / "en_speaker_6.npz"
    if real.is_file():
        return real
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("voice") / "voice.npz"
    np.savez(
        path,
        semantic_prompt=rng.integers(0, 10_000, 300),
        coarse_prompt=rng.integers(0, 1024, (2, 450)),
        fine_prompt=rng.integers(0, 1024, (8, 450)).astype(np.int32),
    )
    return path


class Reference:
    """Suno's ``bark.generation`` with models loaded by its own ``_load_model`` from the checkpoint files."""

    def __init__(self, folder: Path) -> None:
        import bark.generation as generation
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        vocab = folder / "vocab.txt"

        class LocalTokenizer:  # bark downloads bert-base-multilingual-cased; the tests read the same vocabulary
            @staticmethod
            def from_pretrained(name: str) -> BertTokenizerLegacy:
                return BertTokenizerLegacy(vocab_file=str(vocab), do_lower_case=False)

        self.generation = generation
        saved_tokenizer = generation.BertTokenizer
        generation.BertTokenizer = LocalTokenizer
        try:
            # torch 2.11 loads with weights_only=True; Suno's files need the numpy scalar globals, nothing else.
            with torch.serialization.safe_globals(numpy_scalar_globals()):
                self.models = {
                    kind: generation._load_model(str(folder / f"{kind}.pt"), "cpu", model_type=kind)
                    for kind in ("text", "coarse", "fine")
                }
        finally:
            generation.BertTokenizer = saved_tokenizer

    @contextlib.contextmanager
    def installed(self) -> Iterator[Any]:
        saved = dict(self.generation.models)
        self.generation.models.clear()
        self.generation.models.update(self.models)
        try:
            yield self.generation
        finally:
            self.generation.models.clear()
            self.generation.models.update(saved)

    def run(
        self,
        text: str,
        *,
        voice: Any = None,
        seed: int,
        text_temp: float = 0.7,
        waveform_temp: float = 0.7,
        fine_temp: float | None = 0.5,
        top_k: int | None = None,
        top_p: float | None = None,
        min_eos_p: float | None = 0.2,
        max_gen_duration_s: float | None = None,
        allow_early_stop: bool = True,
        max_coarse_history: int = 630,
        sliding_window_len: int = 60,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``torch.manual_seed(seed)`` then the three reference functions, KV-cached, on the default generator."""
        with self.installed() as g:
            torch.manual_seed(seed)
            semantic = g.generate_text_semantic(
                text, history_prompt=voice, temp=text_temp, top_k=top_k, top_p=top_p, silent=True, min_eos_p=min_eos_p,
                max_gen_duration_s=max_gen_duration_s, allow_early_stop=allow_early_stop, use_kv_caching=True,
            )
            coarse = g.generate_coarse(
                semantic, history_prompt=voice, temp=waveform_temp, top_k=top_k, top_p=top_p, silent=True,
                max_coarse_history=max_coarse_history, sliding_window_len=sliding_window_len, use_kv_caching=True,
            )
            fine = g.generate_fine(coarse, history_prompt=voice, temp=fine_temp, silent=True)
        return semantic, coarse, fine


@pytest.fixture(scope="session")
def reference(suno_folder: Path) -> Reference:
    return Reference(suno_folder)
