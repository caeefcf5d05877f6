"""`voices make` in memory that does not grow with the recording's length (issue #18): a long synthetic recording,
made on the fly, costs no more peak memory than a short one, measured with getrusage in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import soundfile

from tests.conftest import REPO_ROOT

from .conftest import speechy

RATE = 22_050  # not 16 or 24 kHz, and stereo: both resamplers and the mono mix run
SHORT_MINUTES = 40 / 60  # already longer than one 30-s HuBERT window
LONG_MINUTES = 2
GROWTH_BOUND_MB = 100  # runs vary by ~30 MB; before streaming, 80 s more audio took ~900 MB more (EnCodec one-pass)


def write_long(path, minutes: float) -> None:
    """A long recording written block by block, so that the test itself stays small."""
    block = speechy(10.0, RATE, channels=2, seed=2)
    with soundfile.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as out:
        for _ in range(round(minutes * 6)):
            out.write(block)


def test_voices_make_memory_is_flat_in_the_recordings_length(tmp_path, hubert_folder, quantizers, codec_folder):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    write_long(short, SHORT_MINUTES)
    write_long(long, LONG_MINUTES)
    # What `barkkit voices make` runs (make_voice), with the stage loaded once, so that a second load of the models
    # (which moves the peak by tens of MB) is not what is measured.
    script = textwrap.dedent(
        """
        import json, resource, sys
        from barkkit.voice_making import make_voice
        from barkkit_hubert.stage import HubertSemantic

        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        short, long, codec, hubert, quantizer, out = sys.argv[1:]
        stage = HubertSemantic.load(hubert=hubert, quantizer=quantizer)
        peaks = []
        # The first runs' peaks hold one-time costs (the heap settles after the codec's second load): the short
        # recording twice, then the long one.
        for audio in (short, short, long):
            voice = make_voice(audio, model=codec, semantic_stage=stage)
            peaks.append(peak_mb())
        voice.save(out)
        print(json.dumps({"peaks": peaks, "semantic": len(voice.semantic), "frames": len(voice.fine)}))
        """
    )
    args = [short, long, codec_folder, hubert_folder, quantizers["v0"], tmp_path / "voice.npz"]
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    _, short_peak, long_peak = result["peaks"]
    assert result["semantic"] == 1 + (LONG_MINUTES * 60 * 16_000 - 400) // 320  # every 20 ms of the 2 minutes
    assert result["frames"] in (750, 751)  # the codec part: the last 10 s (resampling may round up a sample)
    assert long_peak - short_peak < GROWTH_BOUND_MB, (short_peak, long_peak)
    print(f"peak RSS: {short_peak:.0f} MB for 40 s, {long_peak:.0f} MB for {LONG_MINUTES} min")
