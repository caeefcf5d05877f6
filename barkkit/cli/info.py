"""``barkkit info``: this machine as barkkit sees it, and the kernels each stage runs on it."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

import click
import torch

from barkkit.cli.state import CliState

# CPU flags that decide kernels (x86: AVX2, AVX-512, VNNI, BF16, AMX; ARM: NEON is 'asimd', SVE, i8mm, bf16)
_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
          "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")
_CAPS = ("ATEN_CPU_CAPABILITY", "FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_summary() -> tuple[str, list[str]]:
    """The CPU's model name and which of the kernel-deciding flags it reports (Linux's /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    return name, [flag for flag in _FLAGS if flag in flags]


def _echo_kernels(title: str, kernels: Mapping[str, str]) -> None:
    click.echo(title)
    for key, value in kernels.items():
        click.echo(f"  {key:<9} {value}")


@click.command()
@click.option("--model", default=None, help="Load this model (name, hub id or folder) and show what each stage chose.")
@click.option("--mode", type=click.Choice(["exact", "fast"]), default=None, help="Only this mode (default: both).")
@click.option("--device", default="cpu", show_default=True, help="Torch device the stages would run on.")
@click.pass_obj
def info(state: CliState, model: str | None, mode: str | None, device: str) -> None:
    """This machine (CPU features, ISA caps, torch) and the kernels each stage chooses on it.

    Without --model, every installed stage says what it would choose; with --model, the pipeline is loaded and
    each stage says what it chose (choices timed at load time included).

    \b
    Examples:
      barkkit info
      barkkit info --model bark-small --mode fast
      ATEN_CPU_CAPABILITY=avx2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 barkkit info
    """
    name, flags = cpu_summary()
    click.echo(f"barkkit {version('barkkit')}, Python {platform.python_version()}, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads)")
    click.echo(f"cpu: {name} ({platform.machine()}, {os.cpu_count()} cores); flags: {' '.join(flags) or 'none of note'}")
    caps = [f"{var}={os.environ[var]}" for var in _CAPS if os.environ.get(var)]
    click.echo(f"ATen dispatch: {torch.backends.cpu.get_cpu_capability()}; ISA caps: {', '.join(caps) or 'none'}")
    modes = [mode] if mode else ["exact", "fast"]
    if model is not None:
        from barkkit.pipeline import load_pipeline

        for m in modes:
            pipeline = load_pipeline(model, mode=m, device=device, decoder=False)
            for stage in pipeline.steps:
                _echo_kernels(f"\n{stage.name} ({m}, loaded):", getattr(stage, "kernels", {}) or {"kernels": "not said"})
        return
    stages = state.plugins.stages
    for stage_name in stages:
        for m in modes:
            plan = stages.get(stage_name).kernel_plan(m, device)
            if plan:
                _echo_kernels(f"\n{stage_name} ({m}):", plan)
