"""How close fast mode's next-token distributions are to exact mode's, under teacher forcing.

    python benchmarks/agreement.py [--init-scale 4] [--tiny]

Same weights for both modes; a real token sequence fed to both (Bark's shared voice presets: the history comes
from one voice, the forced tokens from another), through the very code paths generation uses (prefill, cached
decode steps, windows). At every step we compare the distribution that would be sampled (after temperature: 0.7
semantic and coarse, 0.5 fine): KL(exact || fast) in nats, mean over steps, and top-1 agreement (same argmax).

Random weights with PyTorch's default init give nearly uniform distributions, on which any change looks harmless.
The weight matrices are therefore scaled by ``--init-scale`` so the logits are peaked (the script prints the exact
mode's mean top-1 probability and entropy so the reader can judge); real Bark checkpoints were not available here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402

TEXT = "Hello, my name is Suno. And, uh, I like pizza. But I also have other interests such as playing tic tac toe."


def compare(exact: list[torch.Tensor], fast: list[torch.Tensor]) -> dict[str, float]:
    """Mean KL(exact || fast), top-1 agreement, and the exact distributions' mean top-1 prob and entropy."""
    e, f = torch.cat(exact), torch.cat(fast)  # (N, V) log-probs
    pe = e.exp()
    kl = (pe * (e - f)).sum(-1)
    ent = -(pe * e.clamp_min(-1e9)).nan_to_num().sum(-1)
    return {"kl": kl.mean().item(), "top1": (e.argmax(-1) == f.argmax(-1)).float().mean().item(),
            "p_max": pe.max(-1).values.mean().item(), "entropy": ent.mean().item(), "steps": e.shape[0]}


def semantic_records(model, text_ids, history, forced) -> list[torch.Tensor]:
    from barkkit_bark.semantic import SemanticOptions, generate_semantic

    rec: list = []
    options = SemanticOptions(min_eos_p=None)

    def teacher(step, rows, logits):  # feed the forced token, keep the distribution it was scored against
        logp = F.log_softmax(logits.float() / options.text_temp, dim=-1)
        rec.append(logp)
        return torch.tensor([int(forced[step])] * len(rows), device=logits.device), logp.exp()

    generate_semantic(model, [text_ids], [history], [torch.Generator()], options, max_steps=len(forced),
                            choose=teacher)
    return rec


def coarse_records(model, semantic, voice, forced, **options) -> list[torch.Tensor]:
    from barkkit_bark.coarse import CoarseOptions, generate_coarse

    rec: list = []
    opts = CoarseOptions(**options)

    def teacher(step, rows, logits):
        rec.append(F.log_softmax(logits.float() / opts.waveform_temp, dim=-1))
        code = int(forced[step % 2, step // 2])
        return torch.tensor([code] * len(rows), device=logits.device)

    generate_coarse(model, [semantic], [voice], [torch.Generator()], opts, choose=teacher)
    return rec


def fine_records(model, coarse, voice, forced, shortcut: str | None = None) -> list[torch.Tensor]:
    """Per (frame, codebook) log-probs, ordered by codebook then frame (the last window to fill a frame wins).

    ``shortcut``: "unpadded" (the model reads no padding frames) or "history 256" (``shortcuts``)."""
    from shortcuts import shorter_history, unpadded

    from barkkit_bark.fine import FineOptions, generate_fine

    rec: list = []
    opts = FineOptions()
    truth = torch.from_numpy(np.asarray(forced, np.int64))

    def teacher(row, codebook, frames, logits):
        keep = (frames >= 0) & (frames < truth.shape[1])
        rec.append((frames[keep], codebook, F.log_softmax(logits[keep].float() / (opts.fine_temp or 1.0), dim=-1)))
        preds = logits.argmax(-1)  # padding frames: the model's own most likely code
        preds[keep] = truth[codebook][frames[keep]]
        return preds

    if shortcut == "unpadded":
        model = unpadded(model, coarse, voice)
    elif shortcut == "history 256":
        voice = shorter_history(voice, 256)
    from barkkit_bark.kernels import Int8Linear

    trim = any(isinstance(m, Int8Linear) for m in model.modules())  # as fast mode runs its int8 model
    generate_fine(model, [coarse], [voice], [torch.Generator()], opts, trim_last_layer=trim, choose=teacher)
    table: dict[tuple[int, int], torch.Tensor] = {}
    for frames, codebook, logp in rec:
        for frame, row in zip(frames.tolist(), logp):
            table[(codebook, frame)] = row
    return [torch.stack([table[k] for k in sorted(table)])]


def draft_passes(folder: str, history, n_sem: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """Exact mode's drafting (``barkkit_bark.speculative``) on these weights: (stage, tokens, fp32 passes).

    The semantic stage runs TEXT with the history voice, the coarse stage its tokens; every fp32 pass that checks
    drafted tokens is counted (the fewer, the more drafts held; tokens / passes is at most n_draft + 1 = 9).
    """
    from barkkit_bark.coarse import CoarseStage
    from barkkit_bark.semantic import SemanticStage

    results = []
    semantic = None
    for stage in (SemanticStage.load(folder), CoarseStage.load(folder)):
        passes = [0]
        # checks run on the fp32 model, or on its oneDNN twin where one is kept (certified.causal_twin)
        for checker in {id(m): m for m in (stage.model, stage.twin) if m is not None}.values():
            def counting_extend(*args, all_logits=False, plain=checker.extend, count=passes, **kwargs):
                count[0] += all_logits
                return plain(*args, all_logits=all_logits, **kwargs)

            checker.extend = counting_extend  # this instance only
        stage.n_draft = 8  # counted even where the twin is timed no faster here (then the stage decodes plainly)
        generator = torch.Generator().manual_seed(seed)
        if semantic is None:
            semantic = stage.run(TEXT, voice=history, generator=generator, allow_early_stop=False,
                                 max_gen_duration_s=(n_sem - 0.5) / H.SEMANTIC_RATE_HZ)
            results.append(("semantic", len(semantic), passes[0]))
        else:
            coarse = stage.run(semantic, voice=history, generator=generator)
            results.append(("coarse", coarse.array.size, passes[0]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-scale", type=float, default=4.0, help="multiplies the random weight matrices")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the forced sequence")
    parser.add_argument("--history-voice", default="v2/en_speaker_6")
    parser.add_argument("--forced-voice", default="v2/en_speaker_1")
    parser.add_argument("--heads-only", action="store_true",
                        help="scale only the output heads (keeps the random body non-chaotic; see harness)")
    parser.add_argument("--tiny", action="store_true", help="2-layer 64-wide models (smoke test)")
    parser.add_argument("--only", default="semantic,coarse,fine")
    parser.add_argument("--fast-only", action="store_true",
                        help="only the 'fast mode' row of each stage (not each change alone, nor the changes not taken)")
    parser.add_argument("--isa", choices=sorted(H.ISA_CAPS), default=None,
                        help="measure as on a CPU with only this instruction set (a child process with ISA caps)")
    args = parser.parse_args()
    if args.isa is not None and not os.environ.get("BARKKIT_BENCH_ISA"):
        sys.exit(H.run_with_isa(args.isa))
    warnings.filterwarnings("ignore")
    shape = {"n_layer": 2, "n_head": 2, "n_embd": 64} if args.tiny else {}
    from barkkit_bark.checkpoints import load_model
    from barkkit_bark.fast import prepare_fast
    from barkkit_bark.kernels import cpu_features, decode_kernel_for, quantize_int8
    from barkkit_bark.model import use_bf16_attention

    models = H.build_reference_models("small", init_scale=args.init_scale, heads_only=args.heads_only, **shape)
    tmp = tempfile.TemporaryDirectory()
    H.write_checkpoints(models, Path(tmp.name))
    del models
    fp32 = {k: load_model(tmp.name, k) for k in ("text", "coarse", "fine")}
    fast = {k: prepare_fast(load_model(tmp.name, k)) for k in ("text", "coarse", "fine")}  # as fast mode runs
    kernel = decode_kernel_for(cpu_features()) or "int_mm"  # as fast mode decodes on this machine
    int8 = {k: quantize_int8(load_model(tmp.name, k), decode_kernel=kernel) for k in ("text", "coarse", "fine")}
    bf16 = {k: use_bf16_attention(load_model(tmp.name, k)) for k in ("text", "coarse", "fine")}
    bf16_cache = {k: load_model(tmp.name, k) for k in ("text", "coarse")}
    for model in bf16_cache.values():
        model.cache_dtype = torch.bfloat16  # as prepare_fast sets it on a CPU
    history_dict, forced = H.load_voice(args.history_voice), H.load_voice(args.forced_voice)
    history = H.to_voice(history_dict)
    n_sem = H.semantic_tokens_for(args.seconds)
    n_frames = H.expected_lengths(n_sem)[1]
    sem = forced["semantic_prompt"][:n_sem]
    coarse = forced["coarse_prompt"][:, :n_frames]
    fine = forced["fine_prompt"][:, :n_frames]
    ids = np.array(H.tokenizer().encode(TEXT, add_special_tokens=False)) + 10_048
    scaled = "output heads" if args.heads_only else "weight matrices"
    print(f"machine: {cpu_features().describe()}; fast mode decodes with {kernel}")
    print(f"bark-small shapes{' (tiny)' if args.tiny else ''}, random weights, {scaled} x{args.init_scale}; history "
          f"{args.history_voice}, forced tokens {args.forced_voice}: {len(sem)} semantic, {coarse.shape[1]} frames\n")
    print(f"{'stage':<9} {'fast-mode change':<34} {'KL nats':>9} {'top-1':>7} {'exact p_max':>11} {'entropy':>8} {'steps':>6}")
    rows = []
    only = args.only.split(",")

    def chosen(variants: list) -> list:
        return variants[:1] if args.fast_only else variants

    with torch.inference_mode():
        if "semantic" in only:
            base = semantic_records(fp32["text"], ids, history_dict["semantic_prompt"], sem)
            for label, models_ in chosen([("fast mode", fast), ("  int8 linears only", int8),
                                          ("  bf16 attention only", bf16), ("  bf16 KV cache only", bf16_cache)]):
                records = semantic_records(models_["text"], ids, history_dict["semantic_prompt"], sem)
                rows.append(("semantic", label, compare(base, records)))
        if "coarse" in only:
            base = coarse_records(fp32["coarse"], sem, history, coarse)
            variants = [
                ("fast mode", fast["coarse"], {}),
                ("  int8 linears only", int8["coarse"], {}),
                ("  bf16 attention only", bf16["coarse"], {}),
                ("  bf16 KV cache only", bf16_cache["coarse"], {}),
                ("history 630 -> 315", fp32["coarse"], {"max_coarse_history": 315}),
                ("window 60 -> 120", fp32["coarse"], {"sliding_window_len": 120}),
                ("int8 + window 120", int8["coarse"], {"sliding_window_len": 120}),
            ]
            for label, model, opts in chosen(variants):
                rows.append(("coarse", label, compare(base, coarse_records(model, sem, history, coarse, **opts))))
        if "fine" in only:
            base = fine_records(fp32["fine"], coarse, history, fine)
            variants = [
                ("fast mode", fast["fine"], None),
                ("  int8 linears only", int8["fine"], None),
                ("  bf16 attention only", bf16["fine"], None),
                ("no padding to 1024", fp32["fine"], "unpadded"),
                ("fine history 512 -> 256", fp32["fine"], "history 256"),
                ("int8 + no padding", int8["fine"], "unpadded"),
            ]
            for label, model, shortcut in chosen(variants):
                rows.append(("fine", label, compare(base, fine_records(model, coarse, history, fine, shortcut))))
    for stage, label, r in rows:
        print(f"{stage:<9} {label:<34} {r['kl']:9.4f} {r['top1']:7.3f} {r['p_max']:11.3f} {r['entropy']:8.2f} {r['steps']:6d}")
    print("\nexact mode, int8 twin drafting 8 tokens per fp32 pass (same tokens as the reference):")
    for stage, tokens, passes in draft_passes(tmp.name, history, n_sem):
        print(f"{stage:<9} {tokens} tokens in {passes} fp32 passes: {tokens / max(passes, 1):.1f} tokens a pass")


if __name__ == "__main__":
    main()
