"""Batch generation and detection on a real two-node Ray cluster, against the local commands, byte for byte.

One cluster for the module (``ray start --head`` plus a worker node, one CPU each) inside a loopback-only network
namespace (see ``ray_cluster.py``); the ``barkkit`` driver runs inside it too. Tiny random Bark models in Suno's
format, with a random-weight EnCodec, load through the code users run, on each actor.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from barkkit.cli import cli
from barkkit.scale import is_complete_audio
from tests.scale.ray_cluster import BIN, NamespacedCluster, namespace_problem

pytest.importorskip("ray", reason="the Ray tests need barkkit[ray]")

BARKKIT = str(BIN / "barkkit")
KILLER = Path(__file__).with_name("kill_an_actor.py")
SERVE_CLIENT = Path(__file__).with_name("serve_client.py")
TEXTS = ["Hello there.", "A second line, a bit longer.", "Third one.", "Fourth.", "Fifth line here.", "Six."]


@pytest.fixture(scope="module")
def cluster():
    problem = namespace_problem()
    if problem:
        pytest.skip(f"no loopback-only network namespace here, so no Ray cluster: {problem}")
    running = NamespacedCluster()
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    from barkkit_encodec.checkpoints import write_encodec_checkpoint
    from tests.plugins.barkkit_bark.conftest import tiny_models, write_suno_folder

    folder = write_suno_folder(tmp_path_factory.mktemp("bark-tiny"), tiny_models(seed=3))
    write_encodec_checkpoint(folder)
    return folder


@pytest.fixture(scope="module")
def voice_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("voice") / "voice.npz"
    np.savez(path, semantic_prompt=rng.integers(0, 10_000, 300), coarse_prompt=rng.integers(0, 1024, (2, 450)),
             fine_prompt=rng.integers(0, 1024, (8, 450)).astype(np.int32))
    return path


def _rows(voice_file: Path) -> list[dict]:
    """Six rows: plain ones, one with its own voice file, one with its own seed, one with its own output."""
    rows = [{"text": text} for text in TEXTS]
    rows[1]["voice"] = str(voice_file)
    rows[2]["seed"] = 42
    rows[3]["out"] = "custom/fourth.wav"
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _generate_args(model_folder: Path, batch: Path, mode: str, *extra) -> list[str]:
    return [BARKKIT, "generate", "--batch", str(batch), "-o", "clips/clip_{n}.wav", "--seed", "7", "--model",
            str(model_folder), "--mode", mode, "--max-gen-duration-s", "0.5", "--threads", "1", *map(str, extra)]


def _local(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "clips").mkdir(exist_ok=True)
    (cwd / "custom").mkdir(exist_ok=True)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _on_cluster(cluster: NamespacedCluster, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    for folder in (cwd, cwd / "clips", cwd / "custom"):
        folder.mkdir(parents=True, exist_ok=True)
    return cluster.run([*args, "--ray", cluster.address], cwd=cwd)


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.wav"))}


@pytest.fixture(scope="module")
def exact_job(cluster, model_folder, voice_file, tmp_path_factory):
    """The six rows in exact mode: locally, then on the cluster with a manifest."""
    root = tmp_path_factory.mktemp("exact")
    batch = _write_jsonl(root / "rows.jsonl", _rows(voice_file))
    local = _local(_generate_args(model_folder, batch, "exact", "-q"), root / "local")
    assert local.returncode == 0, local.stderr
    ray = _on_cluster(cluster, _generate_args(model_folder, batch, "exact", "--manifest", "m.jsonl"), root / "ray")
    assert ray.returncode == 0, ray.stderr
    return root, batch, ray


def test_a_batch_on_two_nodes_writes_the_local_batch_byte_for_byte(exact_job, voice_file):
    root, _, ray = exact_job
    local, clustered = _outputs(root / "local"), _outputs(root / "ray")
    assert sorted(local) == ["clips/clip_1.wav", "clips/clip_2.wav", "clips/clip_3.wav", "clips/clip_5.wav",
                             "clips/clip_6.wav", "custom/fourth.wav"]
    assert clustered == local
    rows = _manifest(root / "ray" / "m.jsonl")
    assert [row["n"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert {row["status"] for row in rows} == {"done"}
    assert [row["seed"] for row in rows] == [7, 8, 42, 10, 11, 12]
    assert [row["text"] for row in rows] == TEXTS
    assert rows[1]["voice"] == str(voice_file) and rows[0]["voice"] is None
    assert rows[3]["path"] == str(root / "ray" / "custom" / "fourth.wav")
    assert all(row["seconds"] > 0 and "error" not in row for row in rows)
    nodes = {row["node_id"] for row in rows}
    assert len(nodes) == 2 and all(isinstance(node, str) and len(node) == 56 for node in nodes)  # both nodes made clips
    assert "6 row(s): 6 done, 0 skipped, 0 failed" in ray.stderr


def test_a_rerun_skips_every_row_and_redoes_only_a_corrupt_one(cluster, exact_job, model_folder):
    root, batch, _ = exact_job
    folder = root / "ray"
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in folder.rglob("*.wav")}
    again = _on_cluster(cluster, _generate_args(model_folder, batch, "exact", "--manifest", "again.jsonl"), folder)
    assert again.returncode == 0, again.stderr
    assert {row["status"] for row in _manifest(folder / "again.jsonl")} == {"skipped"}
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in folder.rglob("*.wav")} == before

    cut, garbage = folder / "clips" / "clip_2.wav", folder / "clips" / "clip_5.wav"
    cut.write_bytes(before[cut][1][: len(before[cut][1]) // 2])  # a copy cut short: still opens, fewer frames
    garbage.write_bytes(b"not audio at all")
    assert not is_complete_audio(cut) and not is_complete_audio(garbage)
    redo = _on_cluster(cluster, _generate_args(model_folder, batch, "exact", "--manifest", "redo.jsonl"), folder)
    assert redo.returncode == 0, redo.stderr
    statuses = {row["n"]: row["status"] for row in _manifest(folder / "redo.jsonl")}
    assert statuses == {1: "skipped", 2: "done", 3: "skipped", 4: "skipped", 5: "done", 6: "skipped"}
    for path, (mtime, data) in before.items():
        assert path.read_bytes() == data
        if path not in (cut, garbage):
            assert path.stat().st_mtime_ns == mtime  # untouched


def test_fast_mode_in_batches_equals_the_local_batch_and_bad_rows_fail_alone(cluster, model_folder, voice_file,
                                                                            tmp_path):
    good = _rows(voice_file)
    bad = [{"text": "Who speaks?", "voice": "no/such_voice", "out": "bad/unknown_voice.wav"},
           {"text": "   ", "out": "bad/empty.wav"}]
    local = _local(_generate_args(model_folder, _write_jsonl(tmp_path / "good.jsonl", good), "fast", "-q"),
                   tmp_path / "local")
    assert local.returncode == 0, local.stderr
    (tmp_path / "ray" / "bad").mkdir(parents=True)
    ray = _on_cluster(cluster, _generate_args(model_folder, _write_jsonl(tmp_path / "all.jsonl", good + bad), "fast",
                                              "--manifest", "m.jsonl", "--rows-per-call", 3), tmp_path / "ray")
    assert ray.returncode == 1, ray.stderr  # a row failed: the job went on, and says so in its exit status
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")
    rows = _manifest(tmp_path / "ray" / "m.jsonl")
    assert [row["status"] for row in rows] == ["done"] * 6 + ["failed", "failed"]
    assert "unknown voice 'no/such_voice'" in rows[6]["error"] and "empty" in rows[7]["error"]
    assert "failed: row 7" in ray.stderr and "failed: row 8" in ray.stderr
    assert not (tmp_path / "ray" / "bad").exists() or not any((tmp_path / "ray" / "bad").iterdir())


def test_a_killed_actor_is_restarted_and_every_row_is_done_once(cluster, model_folder, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"Row number {i}, long enough to take a while.\n" for i in range(1, 9)))
    folder = tmp_path / "ray"
    (folder / "clips").mkdir(parents=True)
    args = [*_generate_args(model_folder, lines, "exact", "--manifest", "m.jsonl"), "--max-gen-duration-s", "1.0",
            "--ray", cluster.address]
    job = subprocess.Popen(cluster.command(args, folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=cluster.env)
    killer = cluster.run([sys.executable, str(KILLER), str(folder / "clips"), str(folder / "m.jsonl")], cwd=folder)
    _, stderr = job.communicate(timeout=300)
    assert killer.returncode == 0 and killer.stdout.startswith("killed"), killer.stdout + killer.stderr
    assert job.returncode == 0, stderr
    rows = _manifest(folder / "m.jsonl")
    assert [row["n"] for row in rows] == list(range(1, 9))  # each row once
    assert {row["status"] for row in rows} == {"done"}
    assert all(is_complete_audio(row["path"]) for row in rows)
    # nothing but the clips (a worker killed in the milliseconds of a write may leave its hidden temporary file)
    assert sorted(p.name for p in (folder / "clips").iterdir() if not p.name.startswith(".")) == [
        f"clip_{i}.wav" for i in range(1, 9)]


def test_detection_on_the_cluster_prints_the_local_lines(cluster, exact_job, monkeypatch):
    root, _, _ = exact_job
    folder = root / "detect"
    (folder / "clips").mkdir(parents=True)
    for path in (root / "ray" / "clips").glob("*.wav"):
        (folder / "clips" / path.name).write_bytes(path.read_bytes())
    (folder / "clips" / "broken.wav").write_bytes(b"RIFF but not really")
    monkeypatch.chdir(folder)
    local = CliRunner().invoke(cli, ["detect", "clips", "--json"])
    assert local.exit_code == 1  # the broken file
    # the folder again, named by URL: pyarrow's filesystem lists it and each actor copies its files from there
    url = (folder / "clips").as_uri()
    ray = cluster.run([BARKKIT, "detect", "clips", url, "--json", "--ray", cluster.address], cwd=folder)
    assert ray.returncode == 1, ray.stderr
    lines = ray.stdout.splitlines()
    assert "\n".join(lines[:6]) + "\n" == local.stdout  # the local command's lines, in its order
    by_path = [json.loads(line) for line in lines[:6]]
    assert "error" in by_path[0] and by_path[0]["path"] == "clips/broken.wav"
    by_url = [json.loads(line) for line in lines[6:]]
    assert [r["path"] for r in by_url] == [f"{url}/{Path(line['path']).name}" for line in by_path]
    assert [r.get("bark_probability") for r in by_url] == [line.get("bark_probability") for line in by_path]
    assert url in by_url[0]["error"] and "/tmp" not in by_url[0]["error"].replace(url, "")


def test_serve_on_ray_answers_as_the_local_server_from_two_replicas(cluster, model_folder, tmp_path):
    """`barkkit serve --ray --replicas 2` behind Ray Serve's proxy, and a plain `barkkit serve`: same answers."""
    body = json.dumps({"model": "bark", "input": "Hello there.", "response_format": "wav", "seed": 5,
                       "max_gen_duration_s": 0.5})
    common = ["--model", str(model_folder), "--mode", "fast", "--log-level", "warning"]
    local = subprocess.Popen(cluster.command([BARKKIT, "serve", *common, "--port", "8001", "--data-dir", "local"],
                                             tmp_path), env={**cluster.env, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ray = subprocess.Popen(cluster.command([BARKKIT, "serve", *common, "--port", "8000", "--data-dir", "ray",
                                            "--ray", cluster.address, "--replicas", "2", "--threads", "1"], tmp_path),
                           env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answers = {}
        for name, port, requests in (("local", 8001, 1), ("ray", 8000, 4)):
            client = cluster.run([sys.executable, str(SERVE_CLIENT), f"http://127.0.0.1:{port}", cluster.address,
                                  str(tmp_path / name), body, str(requests), "yes" if name == "ray" else "no"],
                                 cwd=tmp_path, timeout=300)
            assert client.returncode == 0, client.stdout + client.stderr + (ray.stderr.read() if ray.poll() else "")
            answers[name] = json.loads(client.stdout.strip().splitlines()[-1])
        assert answers["local"]["statuses"] == [200] and answers["ray"]["statuses"] == [200] * 4
        assert answers["ray"]["replicas"] == 2
        expected = (tmp_path / "local_0").read_bytes()
        assert expected[:4] == b"RIFF" and len(expected) > 1000
        assert all((tmp_path / f"ray_{i}").read_bytes() == expected for i in range(4))
    finally:
        for process in (ray, local):
            process.send_signal(signal.SIGTERM)
        for process in (ray, local):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
