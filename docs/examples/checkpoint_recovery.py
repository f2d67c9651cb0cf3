"""What the checkpoint store does with a damaged or untrusted file (``helios-ckpt`` alone).

    python docs/examples/checkpoint_recovery.py runs/recovery

Saves three checkpoints with retention, damages the newest one the way a failing disk or a bad
copy would, and shows that loading falls back to the previous good checkpoint with a warning
naming the file, that asking for the damaged file by name raises ``CheckpointError``, and that
state holding an object whose unpickling would run code is refused (loading is
``torch.load(weights_only=True)`` only, so such a file from elsewhere is refused too).
Afterwards, look at the folder with ``helios checkpoints runs/recovery``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from helios.ckpt import CheckpointError, CheckpointWarning, DirectoryCheckpointStore


class Payload:
    """Unpickling this would call ``print``; any callable could be there, ``os.system`` too."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return print, ("this line must never be printed",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the checkpoint folder to create")
    folder = parser.parse_args().folder

    net = torch.nn.Linear(4, 2)
    store = DirectoryCheckpointStore(
        folder, keep_last=2, keep_best=1, best_metric="loss", best_mode="min"
    )
    for step, loss in ((100, 0.30), (200, 0.45), (300, 0.40)):
        with torch.no_grad():
            net.weight.fill_(step)
        store.save({"net": net.state_dict()}, step=step, epoch=step // 100, metrics={"loss": loss})
    kept = [info.path.name for info in store.list()]
    print("kept:", kept)  # the 2 newest, plus the best by loss (step 100)
    best = store.best()
    print("best:", best.path.name if best else None)

    newest = folder / "step-00000300.pt"
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit in the payload
    newest.write_bytes(bytes(data))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        latest = store.latest()
        state = store.load()  # the newest checkpoint that verifies
    print("latest good:", latest.path.name if latest else None)
    print("loaded weights of step", int(state["net"]["weight"][0, 0]))
    for warning in caught:
        print("warning:", str(warning.message).split(":")[0])  # "checkpoint ... is corrupt"

    try:
        store.load(newest)
    except CheckpointError:
        print("asking for the damaged file by name: CheckpointError")

    # State is tensors, numbers, strings, lists and dicts only: what weights_only loads back.
    try:
        store.save({"net": net.state_dict(), "hook": Payload()}, step=400, epoch=4)
    except CheckpointError:
        print("an object that would run code on loading: refused by save, CheckpointError")
    store.close()


if __name__ == "__main__":
    main()
