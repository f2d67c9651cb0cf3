"""``python -m helios.trainer``: the ``helios`` command."""

from __future__ import annotations

import sys

from helios.trainer._cli import main

sys.exit(main())
