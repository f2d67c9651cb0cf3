"""One torchrun worker of the helios-dist tests; the tests start it, not pytest.

Run: ``python -m torch.distributed.run --nproc-per-node=2 --master-addr=127.0.0.1
--master-port=PORT tests/dist/torchrun_job.py OUTPUT_FOLDER``. Each worker joins the group
through ``TorchDistributed.from_environment`` and writes what it saw to
``OUTPUT_FOLDER/rank<R>.json``.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch

from helios.dist import TorchDistributed, detect_launcher, is_local_main_process, is_main_process


def main(folder: Path) -> None:
    launch = detect_launcher()
    with TorchDistributed.from_environment(
        backend="auto", device="cpu", timeout=timedelta(minutes=4)
    ) as ctx:
        results = {
            "launch": {
                "kind": launch.kind,
                "rank": launch.rank,
                "local_rank": launch.local_rank,
                "node_rank": launch.node_rank,
                "world_size": launch.world_size,
                "local_world_size": launch.local_world_size,
            },
            "context": [ctx.rank, ctx.local_rank, ctx.node_rank, ctx.world_size],
            "flags": [ctx.is_main_process, ctx.is_local_main_process],
            "helpers": [is_main_process(), is_local_main_process()],
            "backend": ctx.backend,
            "mean": ctx.all_reduce_mean(
                {"rank": float(ctx.rank), "square": torch.tensor(ctx.rank**2.0)}
            ),
            "everyone": ctx.all_gather_object([ctx.rank, ctx.local_rank, ctx.node_rank]),
            "from_last": ctx.broadcast_object(f"rank {ctx.rank}", src=ctx.world_size - 1),
            "any_last": ctx.agree(ctx.rank == ctx.world_size - 1, "any"),
        }
        ctx.barrier()
    results["group_left"] = not torch.distributed.is_initialized()
    Path(folder, f"rank{ctx.rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
