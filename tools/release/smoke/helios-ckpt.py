"""Release smoke test of helios-ckpt: save, verify, fall back, refuse a malicious pickle.

Runs inside a fresh virtual environment holding only the helios-ckpt wheel, helios-core and
torch (``tools/release/check_wheels.py`` sets it up).

Run:
    python tools/release/smoke/helios-ckpt.py
"""

from __future__ import annotations

import pickle
import tempfile
import warnings
from pathlib import Path

import torch

from helios.ckpt import CheckpointError, DirectoryCheckpointStore


class Payload:
    """Pickles to a call that would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        """Make unpickling call exec."""
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = DirectoryCheckpointStore(root / "checkpoints", keep_last=2)
        for step in (1, 2, 3):
            store.save({"weights": torch.full((4,), float(step))}, step=step, epoch=0)
        assert [info.step for info in store.list()] == [2, 3]
        newest = store.list()[-1].path
        newest.write_bytes(newest.read_bytes()[:-10])  # truncated
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            latest = store.latest()
            assert latest is not None
            assert latest.step == 2
            assert torch.equal(store.load()["weights"], torch.full((4,), 2.0))
        marker = root / "pwned"
        evil = root / "evil.pt"
        evil.write_bytes(pickle.dumps({"weights": Payload(marker)}))
        try:
            store.load(evil)
        except CheckpointError:
            pass
        else:
            raise AssertionError("a malicious pickle was loaded")
        assert not marker.exists()
        store.close()
    print("helios-ckpt smoke test: ok")


if __name__ == "__main__":
    main()
