"""One stop request, however many paths it came by; a later signal aborts.

In one process, with real signals: copies of a signal within ``same_request_seconds`` of the
first (the process group's copy and a launcher's relay) are one request; a signal after that
window is a second request and raises ``TrainingAbortedError``. And a DataLoader worker built by
helios.data ignores the stop signals while the main process receives them.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import torch
from torch.utils.data import TensorDataset

from helios.data import ResumableDataLoader, ResumableSampler
from helios.trainer import TrainingAbortedError
from helios.trainer._signals import StopSignals


def test_copies_of_one_signal_are_one_request() -> None:
    with StopSignals(same_request_seconds=5.0) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the relayed copy
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert signals.requested is signal.SIGTERM


def _second_request(signals: StopSignals) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
    assert signals.requested is signal.SIGTERM
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)


def test_a_signal_after_the_window_aborts() -> None:
    with StopSignals(same_request_seconds=0.1) as signals:
        message = "SIGINT received while stopping after SIGTERM"
        with pytest.raises(TrainingAbortedError, match=message):
            _second_request(signals)


class _Slow(TensorDataset):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        time.sleep(0.05)
        return super().__getitem__(index)


def test_workers_ignore_the_signals_the_main_process_receives() -> None:
    data = _Slow(torch.arange(64.0))
    loader = ResumableDataLoader(data, ResumableSampler(data, seed=0), batch_size=4, num_workers=2)
    seen = 0
    with StopSignals(same_request_seconds=60.0) as signals:
        for _ in loader:
            seen += 1
            if seen == 2:  # workers running: each process gets both signals, as from a scheduler
                workers = psutil.Process().children(recursive=True)
                assert len(workers) >= 2
                for process in [*workers, psutil.Process()]:
                    os.kill(process.pid, signal.SIGTERM)
                    os.kill(process.pid, signal.SIGINT)
    assert seen == 16  # no worker died
    assert signals.requested is not None
