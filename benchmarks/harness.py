"""Shared pieces of the benchmarks: random Bark-shaped weights, the implementations under test, stage timing.

Every implementation runs on the same weights: the harness builds Suno-format checkpoints (``text.pt``,
``coarse.pt``, ``fine.pt``) from a seed, hands the very same tensors to the reference (``bark==0.1.5``, by filling
its module-level model cache) and to transformers' ``BarkModel`` (state dict renamed and assigned, so no copy),
and points barkkit at the files. Lengths are fixed (no early stop), so every implementation makes the same number
of tokens.

Each implementation is a ``Runner``: ``semantic(text, voice, seed)``, ``coarse(semantic, voice)``,
``fine(coarse, voice)``, ``decode(fine)``, each returning numpy tokens. ``time_stage`` measures wall time and the
peak resident memory of one call (the kernel's high-water mark, reset before the call), or on a GPU the peak of
torch's allocations on it. Every runner takes a ``device``: the reference and transformers move their models there
(the reference then runs under its own bf16 autocast, as ``bark`` does on CUDA), barkkit loads its stages there.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VOCAB = SHARED / "vocab" / "bert-base-multilingual-cased.txt"
PROMPTS = SHARED / "bark_prompts"

SIZES: dict[str, dict[str, int]] = {
    "small": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "large": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
}
VOCABS: dict[str, dict[str, int]] = {
    "text": {"input_vocab_size": 129_600, "output_vocab_size": 10_048},
    "coarse": {"input_vocab_size": 12_096, "output_vocab_size": 12_096},
    "fine": {"input_vocab_size": 1_056, "output_vocab_size": 1_056, "n_codes_total": 8, "n_codes_given": 1},
}
FILE_NAMES = {"small": {"text": "text.pt", "coarse": "coarse.pt", "fine": "fine.pt"},
              "large": {"text": "text_2.pt", "coarse": "coarse_2.pt", "fine": "fine_2.pt"}}
SEMANTIC_RATE_HZ = 49.9
COARSE_RATE_HZ = 75
SAMPLE_RATE = 24_000
STAGES = ("semantic", "coarse", "fine", "decode")


# weights ---------------------------------------------------------------------------------------------------------
def model_args(kind: str, size: str, **shape: int) -> dict[str, Any]:
    """Suno ``model_args`` for one model: ``size`` is "small" or "large"; ``shape`` overrides (tiny test models)."""
    return {**SIZES[size], **shape, "block_size": 1024, "bias": False, "dropout": 0.0, **VOCABS[kind]}


def build_reference_models(size: str = "small", *, seed: int = 0, init_scale: float = 1.0, heads_only: bool = False,
                           **shape: int) -> dict[str, torch.nn.Module]:
    """Random bark.model.GPT / FineGPT models with real vocabularies, in eval mode.

    ``init_scale`` multiplies the weight matrices after PyTorch's default init (all of them, or with ``heads_only``
    the output heads only): random models with the default init give nearly uniform next-token distributions, so
    agreement measurements use a larger scale to make them peaked. Scaling every matrix also makes the random
    network chaotic (a small change anywhere grows layer by layer), which trained models are not; scaling only the
    heads keeps the body's dynamics of the default init and still gives peaked outputs.
    """
    from bark.model import GPT, GPTConfig
    from bark.model_fine import FineGPT, FineGPTConfig

    torch.manual_seed(seed)
    models: dict[str, torch.nn.Module] = {}
    for kind in ("text", "coarse", "fine"):
        args = model_args(kind, size, **shape)
        model = FineGPT(FineGPTConfig(**args)) if kind == "fine" else GPT(GPTConfig(**args))
        with torch.no_grad():
            if heads_only:
                heads = list(model.lm_heads) if kind == "fine" else [model.lm_head]
                for head in heads:  # the fine heads are tied to the codebook embeddings 2..8: those scale too
                    head.weight.mul_(init_scale)
            else:
                for name, param in model.named_parameters():
                    if param.dim() == 2 and "wpe" not in name and "wte" not in name:
                        param.mul_(init_scale)
        models[kind] = model.eval().requires_grad_(False)
    return models


def write_checkpoints(models: dict[str, torch.nn.Module], folder: Path, size: str = "small") -> dict[str, Path]:
    """Write the models in Suno's checkpoint format (``_orig_mod.`` keys, ``model_args``, ``best_val_loss``).

    The tokenizer's vocabulary goes next to them as ``vocab.txt``, so the folder is a complete barkkit model.
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(VOCAB, folder / "vocab.txt")
    paths = {}
    for kind, model in models.items():
        args = {k: getattr(model.config, k) for k in model_args(kind, size)}
        state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
        path = folder / FILE_NAMES[size][kind]
        torch.save({"model_args": args, "model": state, "best_val_loss": torch.tensor(1.0)}, path)
        paths[kind] = path
    return paths


def tokenizer():
    """Bark's cased WordPiece tokenizer from the shared vocabulary (transformers 5's Rust ``BertTokenizer`` ignores
    ``vocab_file`` and would map every word to [UNK]; barkkit_bark builds the original Python one)."""
    from barkkit_bark.text import TextTokenizer

    return TextTokenizer(VOCAB).tokenizer


def load_voice(name: str | None) -> dict[str, np.ndarray] | None:
    """A shared Bark voice preset as a dict of int64 arrays (None for no voice)."""
    if name in (None, "", "none"):
        return None
    data = np.load(PROMPTS / f"{name}.npz")
    return {k: data[k].astype(np.int64) for k in ("semantic_prompt", "coarse_prompt", "fine_prompt")}


def expected_lengths(n_semantic: int) -> tuple[int, int]:
    """(semantic tokens, coarse frames) for ``n_semantic`` semantic tokens, as the reference computes them."""
    ratio = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * 2
    return n_semantic, int(round(math.floor(n_semantic * ratio / 2) * 2)) // 2


def semantic_tokens_for(seconds: float) -> int:
    return int(round(seconds * SEMANTIC_RATE_HZ))


# memory ----------------------------------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-memory high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


@dataclass
class StageTiming:
    seconds: float  # wall time
    tokens: int
    peak_mb: float  # peak resident memory of the process during the stage
    delta_mb: float  # that peak minus the resident memory at the start of the stage
    cpu_seconds: float = 0.0  # CPU time of the process (all threads): less sensitive to other processes' load


def time_stage(fn: Callable[[], Any], tokens_of: Callable[[Any], int], device: str = "cpu") -> tuple[Any, StageTiming]:
    """Run ``fn`` once: wall and CPU seconds, and the peak memory (resident, or on a CUDA ``device`` allocated)."""
    gc.collect()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device) / 2**20
    else:
        reset_peak_rss()
        start = rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
    return out, StageTiming(seconds, tokens_of(out), peak, peak - start, cpu)


ENGINE_PARTS = ("prefill", "decode", "fine passes")


@contextlib.contextmanager
def engine_clock(device: str = "cpu") -> Iterator[dict[str, float]]:
    """Seconds barkkit's fast-mode engine spends, while the block runs, in causal prefills (one row's prompt),
    decode steps (one token for every row) and fine-model passes: ``CausalRunner.prefill_row``,
    ``CausalRunner.step`` and ``FineGPT.forward`` are wrapped with timers for the block (on CUDA, synchronized), then restored.

    What batching can and cannot share: a decode step reads the weights once for all rows, while a prefill or a
    fine pass is one row's compute whatever the batch.
    """
    from barkkit_bark.engine import CausalRunner
    from barkkit_bark.model import FineGPT

    cuda = torch.device(device).type == "cuda"
    seconds = dict.fromkeys(ENGINE_PARTS, 0.0)
    originals = {"prefill": CausalRunner.prefill_row, "decode": CausalRunner.step, "fine passes": FineGPT.forward}

    def timed(fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize(device)
            seconds[part] += time.perf_counter() - t0
            return out
        return run

    def install(prefill: Callable, step: Callable, forward: Callable) -> None:
        CausalRunner.prefill_row, CausalRunner.step, FineGPT.forward = prefill, step, forward

    install(*(timed(fn, part) for part, fn in originals.items()))
    try:
        yield seconds
    finally:
        install(*originals.values())


# runners ---------------------------------------------------------------------------------------------------------
@dataclass
class Runner:
    """One implementation. Stage functions take numpy inputs and return numpy tokens."""

    name: str
    semantic: Callable[[str, dict | None, int, int], np.ndarray]  # (text, voice, seed, n_tokens) -> (T,)
    coarse: Callable[[np.ndarray, dict | None, int], np.ndarray]  # (semantic, voice, seed) -> (2, T)
    fine: Callable[[np.ndarray, dict | None, int], np.ndarray]  # (coarse, voice, seed) -> (8, T)
    decode: Callable[[np.ndarray], np.ndarray] | None = None  # (fine) -> samples
    extra: dict[str, Any] = field(default_factory=dict)


def reference_runner(models: dict[str, torch.nn.Module], codec: torch.nn.Module | None = None,
                     device: str = "cpu") -> Runner:
    """Suno's bark==0.1.5 as ``bark.api`` calls it (KV caching on), with our models in its model cache.

    The models move to ``device`` in place (their tensors stay shared with ``transformers_runner``'s)."""
    import bark.generation as bg

    for model in [*models.values(), *([codec] if codec is not None else [])]:
        model.to(device)
    bg.models["text"] = {"model": models["text"], "tokenizer": tokenizer()}
    bg.models["coarse"] = models["coarse"]
    bg.models["fine"] = models["fine"]
    if codec is not None:
        bg.models["codec"] = codec

    def semantic(text: str, voice: dict | None, seed: int, n_tokens: int) -> np.ndarray:
        torch.manual_seed(seed)
        # the loop stops once the generated duration exceeds max_gen_duration_s: n tokens for (n - 0.5) / rate
        return bg.generate_text_semantic(
            text, history_prompt=voice, temp=0.7, silent=True, allow_early_stop=False,
            max_gen_duration_s=(n_tokens - 0.5) / SEMANTIC_RATE_HZ, use_kv_caching=True,
        )

    def coarse(semantic_tokens: np.ndarray, voice: dict | None, seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return bg.generate_coarse(semantic_tokens, history_prompt=voice, temp=0.7, silent=True, use_kv_caching=True)

    def fine(coarse_tokens: np.ndarray, voice: dict | None, seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return bg.generate_fine(coarse_tokens, history_prompt=voice, temp=0.5, silent=True)

    def decode(fine_tokens: np.ndarray) -> np.ndarray:
        return bg.codec_decode(fine_tokens.astype(np.int64))

    return Runner("reference", semantic, coarse, fine, decode if codec is not None else None)


def _hf_key(name: str) -> str:
    """Suno state-dict name -> transformers' Bark sub-model name (as convert_suno_to_hf.py maps them)."""
    for old, new in (("transformer.", ""), ("wtes", "input_embeds_layers"), ("wte", "input_embeds_layer"),
                     ("wpe", "position_embeds_layer"), ("h.", "layers."), ("ln_1", "layernorm_1"),
                     ("ln_2", "layernorm_2"), ("ln_f", "layernorm_final"), ("c_attn", "att_proj"),
                     ("c_proj", "out_proj"), ("c_fc", "in_proj")):
        name = name.replace(old, new)
    return name


def transformers_runner(models: dict[str, torch.nn.Module], size: str = "small", device: str = "cpu",
                        **shape: int) -> Runner:
    """transformers' BarkModel sub-models, sharing the reference models' tensors (no copy where they are on
    ``device`` already)."""
    from transformers import BarkCoarseConfig, BarkFineConfig, BarkSemanticConfig
    from transformers.models.bark import BarkCoarseModel, BarkFineModel, BarkSemanticModel
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    def config(kind: str, cls):
        a = model_args(kind, size, **shape)
        extra = {"n_codes_total": 8, "n_codes_given": 1} if kind == "fine" else {}
        return cls(num_layers=a["n_layer"], num_heads=a["n_head"], hidden_size=a["n_embd"], bias=False,
                   input_vocab_size=a["input_vocab_size"], output_vocab_size=a["output_vocab_size"],
                   block_size=1024, **extra)

    hf: dict[str, torch.nn.Module] = {}
    for kind, cls, cfg in (("text", BarkSemanticModel, BarkSemanticConfig), ("coarse", BarkCoarseModel, BarkCoarseConfig),
                           ("fine", BarkFineModel, BarkFineConfig)):
        with torch.device("meta"):
            model = cls(config(kind, cfg))
        state = {_hf_key(k): v for k, v in models[kind].state_dict().items() if not k.endswith("attn.bias")}
        own = model.state_dict()
        for key in own:  # causal-mask buffers transformers keeps and Suno's flash path does not
            if key not in state:
                state[key] = torch.tril(torch.ones(1024, 1024, dtype=torch.bool)).view(1, 1, 1024, 1024)
        model.load_state_dict(state, assign=True, strict=True)
        hf[kind] = model.eval().to(device)
    sem_cfg = BarkSemanticGenerationConfig(temperature=0.7, do_sample=True)
    coarse_cfg = BarkCoarseGenerationConfig(temperature=0.7, do_sample=True)
    fine_cfg = BarkFineGenerationConfig(temperature=0.5)
    tok = tokenizer()

    def hf_voice(voice: dict | None) -> dict | None:
        return None if voice is None else {k: torch.from_numpy(v).to(device) for k, v in voice.items()}

    @torch.inference_mode()
    def semantic(text: str, voice: dict | None, seed: int, n_tokens: int) -> np.ndarray:
        torch.manual_seed(seed)
        encoded = tok.encode(" ".join(text.split()), add_special_tokens=False)[:256]
        ids = torch.nn.functional.pad(torch.tensor([encoded]), (0, 256 - len(encoded)))
        mask = (torch.arange(256) < len(encoded)).long()[None]
        out = hf["text"].generate(ids.to(device), semantic_generation_config=sem_cfg, history_prompt=hf_voice(voice),
                                  attention_mask=mask.to(device), max_new_tokens=n_tokens, min_new_tokens=n_tokens)
        return out[0].cpu().numpy()

    @torch.inference_mode()
    def coarse(semantic_tokens: np.ndarray, voice: dict | None, seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        out = hf["coarse"].generate(torch.from_numpy(semantic_tokens)[None].long().to(device),
                                    semantic_generation_config=sem_cfg, coarse_generation_config=coarse_cfg,
                                    history_prompt=hf_voice(voice))
        flat = out[0].cpu().numpy() - 10_000
        return np.stack([flat[0::2], flat[1::2] - 1024])

    @torch.inference_mode()
    def fine(coarse_tokens: np.ndarray, voice: dict | None, seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        flat = np.stack([coarse_tokens[0] + 10_000, coarse_tokens[1] + 11_024], axis=1).reshape(1, -1)
        out = hf["fine"].generate(torch.from_numpy(flat).to(device), semantic_generation_config=sem_cfg,
                                  coarse_generation_config=coarse_cfg, fine_generation_config=fine_cfg,
                                  history_prompt=hf_voice(voice))
        return out[0].cpu().numpy()

    return Runner("transformers", semantic, coarse, fine, None, extra={"models": hf})


def to_voice(voice: dict | None):
    from barkkit.voice import Voice

    return None if voice is None else Voice.from_dict(voice)


def barkkit_runner(folder: Path, mode: str, codec_folder: Path | None = None, device: str = "cpu") -> Runner:
    """barkkit's three Bark stages (and its EnCodec decoder) loaded from ``folder`` in ``mode`` on ``device``, run
    one at a time.

    ``extra`` holds the stages, for batched runs through ``Stage.run_batch``.
    """
    from barkkit_bark.coarse import CoarseStage
    from barkkit_bark.fine import FineStage
    from barkkit_bark.semantic import SemanticStage

    stages = {"semantic": SemanticStage.load(folder, mode=mode, device=device),
              "coarse": CoarseStage.load(folder, mode=mode, device=device),
              "fine": FineStage.load(folder, mode=mode, device=device)}
    decoder = None
    if codec_folder is not None:
        from barkkit_encodec.decoder import EncodecDecoder

        decoder = EncodecDecoder.load(codec_folder, mode=mode, device=device)

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device).manual_seed(seed)

    def semantic(text: str, voice: dict | None, seed: int, n_tokens: int) -> np.ndarray:
        return stages["semantic"].run(text, voice=to_voice(voice), generator=gen(seed), allow_early_stop=False,
                                      max_gen_duration_s=(n_tokens - 0.5) / SEMANTIC_RATE_HZ).array

    def coarse(semantic_tokens: np.ndarray, voice: dict | None, seed: int) -> np.ndarray:
        return stages["coarse"].run(semantic_tokens, voice=to_voice(voice), generator=gen(seed)).array

    def fine(coarse_tokens: np.ndarray, voice: dict | None, seed: int) -> np.ndarray:
        return stages["fine"].run(coarse_tokens, voice=to_voice(voice), generator=gen(seed)).array

    def decode(fine_tokens: np.ndarray) -> np.ndarray:
        from barkkit.tokens import FineTokens

        return decoder.decode(FineTokens(fine_tokens)).samples

    return Runner(f"barkkit-{mode}", semantic, coarse, fine, decode if decoder is not None else None,
                  extra={"stages": stages, "device": device})


def random_codec() -> torch.nn.Module:
    """The reference's EnCodec 24 kHz model with random weights (no download), 6 kbps."""
    from encodec import EncodecModel

    model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(6.0)
    return model.eval()


# What each library is told, per ISA: ATen's vectorised kernels, fbgemm's int8 kernels, oneDNN's and MKL's.
ISA_CAPS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    # AVX2 with AVX-VNNI (Intel Core 12th-14th gen): fbgemm has no kernels for it, oneDNN does
    "avx2_vnni": {"ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI",
                  "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}


def run_with_isa(isa: str) -> int:
    """This script again, in a child process whose libraries run only ``isa`` (an AVX-512 machine measuring what an
    AVX2-only CPU runs); returns its exit status."""
    env = {**os.environ, **ISA_CAPS[isa], "BARKKIT_BENCH_ISA": isa}
    print(f"--isa {isa}: " + " ".join(f"{k}={v}" for k, v in ISA_CAPS[isa].items()), flush=True)
    return subprocess.call([sys.executable, *sys.argv], env=env)


def libraries_isa() -> str:
    """Which ISA each library runs in this process: ATen's dispatch, fbgemm's and bf16 (barkkit_bark.kernels), and
    oneDNN's own report (its verbose mode names the ISA it dispatches to)."""
    from barkkit_bark.kernels import cpu_features

    features = cpu_features()
    probe = "import torch; torch.ops.mkldnn._is_mkldnn_bf16_supported(); torch._int_mm(torch.ones(17, 64, dtype=torch.int8), torch.ones(64, 64, dtype=torch.int8))"
    verbose = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                             capture_output=True, text=True).stdout
    onednn = next((part.split(":", 1)[1] for line in verbose.splitlines() for part in line.split(",")
                   if part.startswith("isa:")), "unknown")
    return (f"ATen {features.aten}, fbgemm {features.fbgemm or 'absent'}, oneDNN {onednn}, MKL "
            f"{os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'its own choice')}, bf16 matrix units "
            f"{'used' if features.bf16_matmul else 'not used'}")
