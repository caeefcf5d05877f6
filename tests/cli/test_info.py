"""``barkkit info``: the machine's CPU features and the kernels each stage plans, or chose once loaded."""

import os
import subprocess
import sys

import torch
from click.testing import CliRunner

from barkkit import load_plugins
from barkkit.cli import cli


def test_info_names_the_cpu_and_each_bark_stages_kernels_for_both_modes():
    cli.use_plugins(load_plugins())
    try:
        result = CliRunner().invoke(cli, ["info"])
    finally:
        cli.use_plugins(None)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"ATen dispatch: {torch.backends.cpu.get_cpu_capability()}" in out
    for stage in ("bark.semantic", "bark.coarse", "bark.fine"):
        assert f"{stage} (exact):" in out and f"{stage} (fast):" in out
    assert "kv_cache" in out and "drafts 8 tokens" in out


def test_info_under_avx2_caps_says_what_an_avx2_cpu_runs():
    """The same command with every library capped at AVX2 plans 7-bit fbgemm decoding and fp32 attention."""
    if not torch.cpu._is_avx2_supported():
        return
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-m", "barkkit", "info", "--mode", "fast"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "ATen dispatch: AVX2" in out and "ISA caps: ATEN_CPU_CAPABILITY=avx2" in out
    assert "decode    fbgemm_u7" in out and "attention fp32" in out and "int8 (fbgemm avx2)" in out

