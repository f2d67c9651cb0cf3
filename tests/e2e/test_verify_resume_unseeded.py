"""``helios verify-resume`` on a model drawing unseeded randomness: not reproducible at all.

One stop kind (``--stops sigterm``) is enough to expose it; the straight run is then repeated,
differs too, and the report blames unseeded randomness and names the first differing tensor.
"""

from __future__ import annotations

import pytest
from cli_runs import helios


@pytest.mark.slow
def test_verify_resume_names_the_tensor_of_an_unseeded_model() -> None:
    result = helios(
        "verify-resume",
        "--model",
        "verify_jobs:Unseeded",
        "--data",
        "verify_jobs:Blobs",
        "--steps",
        "5",
        "--stops",
        "sigterm",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SIGTERM mid-epoch (after step" in result.stdout
    assert "SIGKILL" not in result.stdout  # only the stops asked for
    assert "resumable: NO" in result.stdout
    assert "first differing tensor: model/networks/net/" in result.stdout
    assert "unseeded randomness" in result.stdout
