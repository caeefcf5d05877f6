"""A real two-node Ray cluster on this machine, inside namespaces whose only network is loopback.

Ray advertises the machine's own address even when told 127.0.0.1, so the cluster runs in a new network
namespace (only ``lo``, brought up as ``ip link set lo up`` does), where Ray finds no other address: no packet leaves loopback. The namespace
also has its own process ids and ``/proc`` (``unshare -p -m --mount-proc``): when its first process (a ``sleep``)
is killed, the kernel ends every process in it, so the cluster cannot outlive the tests. Commands (``ray start``,
the ``barkkit`` driver) enter it with ``nsenter``.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HEAD_PORT = 6379  # the namespace has its own ports: nothing else listens there
# `ip link set lo up` without needing iproute2: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP added
LOOPBACK_UP = (
    "import fcntl, socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "flags = struct.unpack('16sh14x', fcntl.ioctl(s, 0x8913, struct.pack('16sh14x', b'lo', 0)))[1]; "
    "fcntl.ioctl(s, 0x8914, struct.pack('16sh14x', b'lo', flags | 1))"
)


def namespace_problem() -> str | None:
    """Why a loopback-only namespace cannot be made here (None when it can)."""
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "-m", "--mount-proc", sys.executable, "-c", LOOPBACK_UP],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make network and process namespaces (unshare -n -p: {probe.stderr.strip() or probe.returncode})"
    return None


class NamespacedCluster:
    """Head (``--num-cpus=1``) plus one worker node (``--num-cpus=1``, its own temp dir), in one namespace."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bkray-"))  # short: Ray's socket paths must fit 107 bytes
        self.address = f"127.0.0.1:{HEAD_PORT}"
        # Ray (2.5x+) turns token authentication on by itself when ~/.ray/auth_token exists (any earlier
        # `ray.init()` on this machine writes one): give this cluster its own token, so nodes and drivers agree
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self._holder = subprocess.Popen(
            ["unshare", "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child", "sh", "-c",
             f"{shlex.quote(sys.executable)} -c {shlex.quote(LOOPBACK_UP)} && exec sleep infinity"],
            stdin=subprocess.DEVNULL)
        self.pid = self._first_process()

    def _first_process(self) -> int:
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children")
        for _ in range(200):
            found = children.read_text().split() if children.exists() else []
            if found:
                return int(found[0])
            time.sleep(0.01)
        raise RuntimeError("the namespace's first process did not start")

    def command(self, args: list[str], cwd: Path | None = None) -> list[str]:
        """``args`` run inside the namespace, in ``cwd`` (entered after the mount namespace, so paths agree)."""
        inner = f"cd {shlex.quote(str(cwd or self.root))} && exec {shlex.join(args)}"
        return ["nsenter", "-t", str(self.pid), "-n", "-p", "-m", "sh", "-c", inner]

    def run(self, args: list[str], cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(args, cwd), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.env)

    def _ray_start(self, *extra: str, temp: str) -> None:
        result = self.run([str(BIN / "ray"), "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                           "--disable-usage-stats", "--object-store-memory=100000000",
                           f"--temp-dir={self.root / temp}", *extra], timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> "NamespacedCluster":
        self._ray_start("--head", f"--port={HEAD_PORT}", "--include-dashboard=false", temp="head")
        # a second raylet on the same host needs its own agent port
        self._ray_start(f"--address={self.address}", "--dashboard-agent-listen-port=52366", temp="worker")
        deadline = time.monotonic() + 60
        while True:  # both nodes registered: jobs size their pools from the nodes they see
            active = self.run([str(BIN / "ray"), "status"], timeout=60).stdout.split("Pending:")[0]
            if active.count(" node_") >= 2:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker node did not join the head:\n{active}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Kill the namespace's first process: the kernel then ends every process in the namespace at once.

        (``ray stop`` would wait for each process in turn, ~25 s here, for the same end.)
        """
        try:
            self._holder.kill()  # unshare --kill-child passes the SIGKILL on to the namespace's first process
            self._holder.wait(timeout=30)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if Path(f"/proc/{self.pid}").exists():
                os.kill(self.pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
