"""Stress the graceful stop: every signal case, many times, at random moments; print a tally.

The test suite stops each case once, at a known step (tests/trainer/test_stop_signals_*.py). A
race hides there: here each case is stopped ``--repeat`` times by ``os.killpg`` of the job's
process group (as SLURM, Kubernetes or Ctrl-C stop a job) at a random moment of the training,
worker start-up and epoch ends included, then resumed and compared with a straight run bit for
bit. Run from the repository root:

    uv run python tools/stress/signals.py --repeat 5
    uv run python tools/stress/signals.py --repeat 5 --cases one-SIGTERM-workers torchrun-SIGINT

A repetition is ``ok`` when the stopped job exited as documented (75, or 0 when the stop fell on
the last step or after the end; torchrun: 1 with every rank 75), left no abort or dead-worker
error, and the resumed run is identical to the straight one (final checkpoint with every rank's
RNG state, and every ``metrics.jsonl`` record but its wall time and measured figures). Exit
status: 0 when every repetition is ok.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from resume_checks import (  # noqa: E402
    assert_same_training,
    comparable_records,
    final_checkpoint,
)
from signal_checks import run_job  # noqa: E402

# 12 batches an epoch in one process, 6 on two ranks: two or four epoch ends to stop at.
BASE: dict[str, Any] = {
    "unit": "iteration",
    "total": 24,
    "checkpoint_every": 5,
    "log_every": 1,
    "seed": 5,
    "workers": 2,
    "step_seconds": 0.1,  # the run lasts a few seconds: a random moment falls inside it
}
CASES: dict[str, dict[str, Any]] = {
    f"{launcher}-{stop}{suffix}": {
        "launcher": launcher,
        "stop": signal.Signals[stop],
        "extra": extra,
    }
    for stop in ("SIGTERM", "SIGINT")
    for launcher, suffix, extra in (
        ("one", "-workers", {}),
        ("one", "-persistent", {"persistent_workers": True}),
        ("spawn", "", {"devices": 2}),
        ("torchrun", "", {}),
    )
}


def _straight(root: Path, reference: str) -> Path:
    run_dir = root / f"straight-{reference}"
    launcher = "torchrun" if reference == "ddp" else "python"
    status, output = run_job({"run_dir": str(run_dir), **BASE}, launcher=launcher)
    if status != 0:
        raise SystemExit(f"the straight {reference} run failed ({status}):\n{output[-3000:]}")
    return run_dir


def _exit_problem(
    launcher: str, status: int, run_dir: Path, finished: bool, stop: signal.Signals
) -> str | None:
    """What is wrong with how the stopped job exited, or ``None``."""
    if finished:
        # A signal that arrives after fit() returned meets Python's own handling (or
        # torchrun's): the run is finished all the same.
        after_the_end = (0, 1, -int(stop), 128 + int(stop))
        return None if status in after_the_end else f"exit {status} after a finished run"
    if launcher != "torchrun":
        return None if status == 75 else f"exit {status} without a finished run"
    ranks = [
        (run_dir / f"exit-{rank}").read_text()
        for rank in range(2)
        if (run_dir / f"exit-{rank}").exists()
    ]
    return None if status == 1 and ranks == ["75", "75"] else f"torchrun {status}, ranks {ranks}"


def one_repetition(case: dict[str, Any], root: Path, straight: Path, chooser: random.Random) -> str:
    """Stop, resume and compare once; ``"ok ..."`` or what went wrong."""
    run_dir = Path(tempfile.mkdtemp(dir=root))
    settings = {"run_dir": str(run_dir), **BASE, **case["extra"]}
    launcher = "torchrun" if case["launcher"] == "torchrun" else "python"
    ranks = 1 if case["launcher"] == "one" else 2
    # from before the first batch (workers starting) to past the end (a stop on the last step)
    delay = chooser.uniform(0.0, BASE["total"] * BASE["step_seconds"] * 1.2)
    status, output = run_job(settings, launcher=launcher, stop=case["stop"], delay=delay)
    for failure in ("TrainingAbortedError", "killed by signal", "exited unexpectedly"):
        if failure in output:
            return f"FAILED: {failure} (exit {status})"
    saved = final_checkpoint(run_dir)
    finished = bool(saved["trainer"]["finished"])
    problem = _exit_problem(launcher, status, run_dir, finished, case["stop"])
    if problem is not None:
        return f"FAILED: {problem}"
    if not finished:  # resumed under torchrun for two ranks, as the tests do
        again = {"run_dir": str(run_dir), **BASE}
        if ranks == 1:
            again.update(case["extra"])
        resumed, resumed_output = run_job(again, launcher="torchrun" if ranks == 2 else "python")
        if resumed != 0:
            return f"FAILED: the resumed run exited {resumed}: {resumed_output[-500:]}"
    try:
        assert_same_training(straight, run_dir)
        assert comparable_records(straight) == comparable_records(run_dir), "metrics differ"
    except AssertionError as difference:
        return f"FAILED: differs: {str(difference).splitlines()[0]}"
    step = saved["training_state"]["step"]
    if finished:
        return f"ok (finished, exit {status}, signal after {delay:.2f} s)"
    return f"ok (stopped after step {step}, signal after {delay:.2f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=sorted(CASES), choices=sorted(CASES))
    parser.add_argument("--seed", type=int, default=None, help="seed of the stop moments")
    args = parser.parse_args()
    chooser = random.Random(args.seed)
    tally: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="helios-stress-") as folder:
        root = Path(folder)
        straights: dict[str, Path] = {}
        for name in args.cases:
            case = CASES[name]
            reference = "one" if case["launcher"] == "one" else "ddp"
            if reference not in straights:
                straights[reference] = _straight(root, reference)
            outcomes = []
            for repetition in range(args.repeat):
                outcome = one_repetition(case, root, straights[reference], chooser)
                print(f"{name} #{repetition + 1}: {outcome}", flush=True)
                outcomes.append(outcome)
            tally[name] = outcomes
    print("\ntally (ok / runs):")
    failed = 0
    for name, outcomes in tally.items():
        ok = sum(o.startswith("ok") for o in outcomes)
        failed += len(outcomes) - ok
        print(f"  {name:28s} {ok}/{len(outcomes)} ok")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
