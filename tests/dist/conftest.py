"""Put this folder on ``sys.path`` so processes started by ``spawn`` can import the workers.

Children started with the "spawn" method unpickle their target by module name; pytest's
importlib mode gives test modules names the children cannot import, so the functions the
children run live in ``helios_dist_workers.py`` here, importable by its plain name.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
