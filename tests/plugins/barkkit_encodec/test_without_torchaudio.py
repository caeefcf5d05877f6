"""Decoding needs torch only: it works where `import torchaudio` fails (not installed, or built for another torch)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from barkkit.tokens import FineTokens
from barkkit_encodec.decoder import EncodecDecoder

BLOCKERS = {
    # pip never installed it: the import system finds nothing.
    "missing": "sys.modules['torchaudio'] = None",
    # Installed, but its compiled parts do not match this torch: found, then fails while importing.
    "broken": textwrap.dedent("""
        import importlib.abc, importlib.machinery
        class BrokenLoader(importlib.abc.Loader):
            def create_module(self, spec):
                return None
            def exec_module(self, module):
                raise ImportError("torchaudio: undefined symbol (built for another torch)")
        class BrokenTorchaudio(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torchaudio" or name.startswith("torchaudio."):
                    return importlib.machinery.ModuleSpec(name, BrokenLoader())
                return None
        sys.meta_path.insert(0, BrokenTorchaudio())
    """),
}

CHILD = """
import sys
{blocker}
try:
    import torchaudio
except ImportError:
    pass
else:
    raise SystemExit("torchaudio was importable: the test blocks nothing")
import numpy as np
from barkkit.plugins import load_plugins
from barkkit.pipeline import Pipeline
from barkkit.tokens import FineTokens
from barkkit.audio import save_audio

plugins = load_plugins()
pipeline = Pipeline.from_spec({{"semantic": False, "coarse": False, "fine": False, "decoder": "encodec",
                                "model": sys.argv[1]}}, plugins=plugins)
generation = pipeline.run(FineTokens(np.load(sys.argv[2])["fine_prompt"]))
np.save(sys.argv[3], generation.audio.samples)
save_audio(sys.argv[3] + ".wav", generation.audio)
from barkkit_encodec.checkpoints import write_encodec_checkpoint
write_encodec_checkpoint(sys.argv[4])  # the test helper needs torch only, too
print("loaded:", sorted(name for name in ("torchaudio", "encodec", "vocos") if sys.modules.get(name) is not None))
"""


@pytest.mark.parametrize("how", sorted(BLOCKERS))
def test_decode_without_torchaudio(how, original_codec, prompts_dir, tmp_path):
    folder, _ = original_codec
    prompt = prompts_dir / "v2" / "en_speaker_1.npz"
    out = tmp_path / "audio.npy"
    child = CHILD.format(blocker=BLOCKERS[how])
    result = subprocess.run([sys.executable, "-c", child, str(folder), str(prompt), str(out), str(tmp_path / "written")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded: []" in result.stdout  # neither torchaudio nor the encodec/vocos packages were imported
    expected = EncodecDecoder.load(folder).decode(FineTokens(np.load(prompt)["fine_prompt"])).samples
    assert np.abs(np.load(out) - expected).max() <= 1e-6 * np.abs(expected).max()
    assert (tmp_path / "audio.npy.wav").stat().st_size > 44
    assert (tmp_path / "written" / "encodec_24khz-d7cc33bc.th").stat().st_size > 50_000_000
