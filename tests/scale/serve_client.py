"""HTTP client for the Ray Serve test, run inside the cluster's namespace (where the proxy listens on loopback).

Waits for ``/health`` to answer 200, sends the same speech request several times (Serve's proxy spreads them over
the replicas), writes each answer's bytes to OUT_PREFIX_<i>, and prints one JSON line: the statuses, and the
deployment's running replicas as Ray Serve reports them.
Usage: python serve_client.py URL ADDRESS OUT_PREFIX BODY_JSON REQUESTS COUNT_REPLICAS(yes|no)
"""

import json
import sys
import time
import urllib.error
import urllib.request


def call(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def running_replicas(address: str) -> int:
    import ray
    from ray import serve

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    status = serve.status().applications["barkkit"].deployments["BarkkitServer"]
    return int(status.replica_states.get("RUNNING", 0))


def main() -> None:
    url, address, prefix, body, requests = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
    count = sys.argv[6] == "yes"
    deadline = time.monotonic() + 240
    while True:
        try:
            if call(f"{url}/health")[0] == 200:
                break
        except OSError:
            pass  # the proxy is not listening yet
        if time.monotonic() > deadline:
            print(json.dumps({"error": "never healthy"}))
            sys.exit(1)
        time.sleep(0.5)
    statuses = []
    for i in range(requests):
        status, data = call(f"{url}/v1/audio/speech", body)
        statuses.append(status)
        with open(f"{prefix}_{i}", "wb") as handle:
            handle.write(data)
    print(json.dumps({"statuses": statuses, "replicas": running_replicas(address) if count else None}))


if __name__ == "__main__":
    main()
