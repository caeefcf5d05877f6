"""Rows through a Ray Data actor pool: the one distributed loop that generation and detection share.

Each row travels as one JSON string (Arrow then never has to type seeds beyond int64, None voices or mixed
columns) and comes back as one JSON string. The pool has a fixed size; each actor holds what its class's
constructor loads (a pipeline, a detector) for the whole job. A worker process that dies is restarted and its
unfinished calls are retried on it: Ray Data makes its pool's actors with unlimited restarts and task retries
(``max_restarts=-1``, ``max_task_retries=-1``), and a call's output counts only once the call has finished, so
every row comes back once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from barkkit.errors import BarkkitError
from barkkit.scale.cluster import first_barkkit_error

__all__ = ["run_pool", "JsonRowsWorker", "one_line", "CALLS_IN_FLIGHT"]

# Calls queued on one actor at a time: two hide the hand-over between calls, and few keep rows from piling up on
# the actor that happened to load first (the pool then balances by who finishes).
CALLS_IN_FLIGHT = 2
BLOCKS_PER_ACTOR = 16
# Rows are handed out only once every actor of the pool has loaded its model (else the first actor up takes a small
# job's every row); a pool that cannot start in this time (a cluster without the CPUs) ends the job with an error.
POOL_START_TIMEOUT_S = 1800


class JsonRowsWorker:
    """Base of the pool's actors: ``setup`` once (load a model), then JSON rows to JSON results via ``process``.

    A ``setup`` that fails (a missing model folder, an unknown stage) is not raised from the constructor, where Ray
    would retry the actor's creation and print each traceback: every row answered then carries ``setup_error``,
    and ``run_pool`` ends the job with that one line.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.setup_error: str | None = None
        try:
            self.setup(**kwargs)
        except Exception as exc:
            self.setup_error = one_line(exc)

    def setup(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract; subclasses name their own
        raise NotImplementedError

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [json.loads(item) for item in batch["row"]]
        if self.setup_error is not None:
            results = [{**row, "setup_error": self.setup_error} for row in rows]
        else:
            results = self.process(rows)
        return {"result": np.array([json.dumps(result) for result in results], dtype=object)}


def one_line(exc: BaseException) -> str:
    """An exception as one line: a ``BarkkitError``'s own message, anything else prefixed with its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, BarkkitError) else f"{type(exc).__name__}: {text}"


def run_pool(
    ray: Any,
    rows: list[dict[str, Any]],
    worker: type[JsonRowsWorker],
    constructor_kwargs: dict[str, Any],
    *,
    actors: int,
    threads: int,
    rows_per_call: int = 1,
    key: str = "n",
) -> Iterator[dict[str, Any]]:
    """Yield one result per row, in the order they finish, each row once (by ``key``).

    Args:
        rows: JSON-serializable dicts, each with a unique ``key``.
        worker: the actor class; built once per actor with ``constructor_kwargs``.
        actors: the pool's size; threads: CPUs each actor reserves (and the torch threads it uses).
        rows_per_call: rows handed to one call of an actor (a generation batch).
    Raises ``BarkkitError`` when the job itself fails (an actor cannot start, retries run out).
    """
    if not rows:
        return
    # Blocks are what the pool hands out (a call then takes rows_per_call of a block's rows at a time): a few per
    # actor balance the load, without a block per row for a batch of thousands.
    blocks = min(len(rows), BLOCKS_PER_ACTOR * max(1, actors))
    ray.data.DataContext.get_current().wait_for_min_actors_s = POOL_START_TIMEOUT_S
    dataset = ray.data.from_items([{"row": json.dumps(row)} for row in rows], override_num_blocks=blocks)
    mapped = dataset.map_batches(
        worker,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=rows_per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(rows))),
                                           max_tasks_in_flight_per_actor=CALLS_IN_FLIGHT),
        num_cpus=threads,
    )
    seen: set[Any] = set()
    setup_error = None
    try:
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            for item in batch["result"]:
                result = json.loads(item)
                if "setup_error" in result:  # every row comes back at once like this: let the job end cleanly
                    setup_error = setup_error or result["setup_error"]
                    continue
                if result[key] in seen:  # a retried call whose first run's output also arrived: same file, once
                    continue
                seen.add(result[key])
                yield result
    except BarkkitError:
        raise
    except Exception as exc:
        inner = first_barkkit_error(exc)
        if inner is not None:
            raise BarkkitError(str(inner)) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BarkkitError(f"the Ray job failed: {type(exc).__name__}: {first}") from None
    if setup_error is not None:
        raise BarkkitError(f"an actor could not start: {setup_error}")
