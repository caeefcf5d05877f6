"""Time barkkit's Bark stages against Suno's reference on the same random weights, and check the tokens agree.

    python -m barkkit_bark.benchmark [--size small|large|tiny] [--seconds 1.5] [--repeats 2] [--mode exact]

Random weights at Bark's real shapes (bark-small: 12 layers, 12 heads, 768 wide) are written once as Suno
checkpoints; the reference loads them with its own loader. The semantic stage is capped with
``max_gen_duration_s`` (random weights rarely stop on their own), so both sides do the same number of steps.
Prints one line per stage and side, and the ratio reference / barkkit (above 1: barkkit is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from barkkit.weights import numpy_scalar_globals
from barkkit_bark.checkpoints import save_suno_checkpoint
from barkkit_bark.coarse import generate_coarse
from barkkit_bark.fine import generate_fine
from barkkit_bark.model import GPT, FineGPT, GPTConfig
from barkkit_bark.semantic import generate_semantic
from barkkit_bark.text import TextTokenizer

SIZES = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64),
    "small": dict(n_layer=12, n_head=12, n_embd=768),
    "large": dict(n_layer=24, n_head=16, n_embd=1024),
}
TEXT = "Hello, my name is Suno. And, uh, I like pizza."


def _random_models(size: str) -> tuple[GPT, GPT, FineGPT]:
    torch.manual_seed(0)
    shape = dict(SIZES[size], bias=False)
    models = (
        GPT(GPTConfig(**shape, input_vocab_size=129_600, output_vocab_size=10_048)),
        GPT(GPTConfig(**shape, input_vocab_size=12_096, output_vocab_size=12_096)),
        FineGPT(GPTConfig(**shape, input_vocab_size=1_056, output_vocab_size=1_056)),
    )
    with torch.no_grad():
        for model in models:
            for parameter in model.parameters():
                if parameter.ndim == 2:
                    parameter.normal_(0.0, 0.02)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seconds", type=float, default=1.5, help="max_gen_duration_s of the semantic stage")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mode", choices=["exact", "fast"], default="exact")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--vocab", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared/data/vocab/bert-base-multilingual-cased.txt")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import bark.generation as reference
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    folder = Path(tempfile.mkdtemp(prefix="barkkit-bench-"))
    mine = _random_models(args.size)
    for name, model in zip(("text.pt", "coarse.pt", "fine.pt"), mine):
        save_suno_checkpoint(folder / name, model)
    with torch.serialization.safe_globals(numpy_scalar_globals()), contextlib.redirect_stderr(None):
        saved = reference.BertTokenizer
        reference.BertTokenizer = type("Local", (), {"from_pretrained": staticmethod(lambda _: BertTokenizerLegacy(vocab_file=str(args.vocab), do_lower_case=False))})
        try:
            for kind in ("text", "coarse", "fine"):
                reference.models[kind] = reference._load_model(str(folder / f"{kind}.pt"), "cpu", model_type=kind)
        finally:
            reference.BertTokenizer = saved
    tokenizer = TextTokenizer(args.vocab)
    exact = args.mode == "exact"
    print(f"size={args.size} threads={torch.get_num_threads()} semantic cap={args.seconds}s mode={args.mode}")

    totals: dict[str, dict[str, list[float]]] = {"reference": {}, "barkkit": {}}

    def run_reference(seed: int) -> tuple[list[float], tuple[np.ndarray, ...]]:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        semantic = reference.generate_text_semantic(TEXT, temp=0.7, silent=True, max_gen_duration_s=args.seconds, use_kv_caching=True)
        t1 = time.perf_counter()
        coarse = reference.generate_coarse(semantic, temp=0.7, silent=True, use_kv_caching=True)
        t2 = time.perf_counter()
        fine = reference.generate_fine(coarse, temp=0.5, silent=True)
        t3 = time.perf_counter()
        return [t1 - t0, t2 - t1, t3 - t2], (semantic, coarse, fine)

    def run_barkkit(seed: int) -> tuple[list[float], tuple[np.ndarray, ...]]:
        generator = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        semantic = generate_semantic(mine[0], tokenizer.encode(TEXT), None, generator, max_gen_duration_s=args.seconds, exact=exact)
        t1 = time.perf_counter()
        coarse = generate_coarse(mine[1], semantic, None, generator, exact=exact)
        t2 = time.perf_counter()
        fine = generate_fine(mine[2], coarse, None, generator)
        t3 = time.perf_counter()
        return [t1 - t0, t2 - t1, t3 - t2], (semantic, coarse, fine)

    for repeat in range(args.repeats):
        # Alternate which side goes first, so neither always runs on a warmer (or busier) machine.
        sides = [("reference", run_reference), ("barkkit", run_barkkit)]
        results = {name: run(repeat) for name, run in (sides if repeat % 2 == 0 else sides[::-1])}
        outputs = {name: tokens for name, (_, tokens) in results.items()}
        same = all(np.array_equal(a, b) for a, b in zip(outputs["reference"], outputs["barkkit"]))
        for side, (times, _) in results.items():
            for stage, seconds in zip(("semantic", "coarse", "fine"), times):
                totals[side].setdefault(stage, []).append(seconds)
        semantic, coarse, _ = outputs["barkkit"]
        print(
            f"run {repeat}: {len(semantic)} semantic, {coarse.shape[1]} frames; identical tokens: {same}; "
            f"reference {sum(results['reference'][0]):.2f}s, barkkit {sum(results['barkkit'][0]):.2f}s"
        )
    for stage in ("semantic", "coarse", "fine"):
        ref, ours = min(totals["reference"][stage]), min(totals["barkkit"][stage])
        print(f"{stage:9s} reference {ref:7.2f}s  barkkit {ours:7.2f}s  ratio {ref / ours:5.2f}x (best of {args.repeats})")
    ref_total = sum(min(v) for v in totals["reference"].values())
    our_total = sum(min(v) for v in totals["barkkit"].values())
    print(f"{'total':9s} reference {ref_total:7.2f}s  barkkit {our_total:7.2f}s  ratio {ref_total / our_total:5.2f}x")


if __name__ == "__main__":
    main()
