"""Fault injection for the Ray tests, run inside the cluster's namespace next to a running job.

Waits until the job has written its first clip (and not yet its manifest: the job is mid-way), then kills one
generation actor's worker process with SIGKILL, as a crash or the OOM killer would, and prints its pid.
Usage: python kill_an_actor.py OUTPUT_FOLDER MANIFEST
"""

import os
import signal
import sys
import time
from pathlib import Path


def generation_actors() -> list[int]:
    """Pids of this namespace's processes whose title names the generation actor (Ray's ``ray::...`` titles)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and "GenerationWorker" in title:
                found.append(int(entry.name))
    return sorted(found)


def main() -> None:
    folder, manifest = Path(sys.argv[1]), Path(sys.argv[2])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        actors = generation_actors()
        if any(folder.glob("clip_*.wav")) and len(actors) >= 2:
            if manifest.exists():
                print("the job ended before an actor could be killed")
                sys.exit(2)
            os.kill(actors[0], signal.SIGKILL)
            print(f"killed {actors[0]} of {actors}")
            return
        time.sleep(0.02)
    print("no clip or actor appeared")
    sys.exit(3)


if __name__ == "__main__":
    main()
