"""Execute Python code blocks in order, in one namespace, as a reader pasting them would.

    python run_blocks.py BLOCKS_JSON

``BLOCKS_JSON`` holds ``[{"name": ..., "line": ..., "source": ...}, ...]``. A failing block is
reported with the page and line it came from. The namespace's ``__name__`` is ``"__main__"``,
as in a script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    blocks = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks:
        # Pad with blank lines so a traceback's line numbers are the page's.
        source = "\n" * (block["line"] - 1) + block["source"]
        code = compile(source, block["name"], "exec")
        print(f"--- running {block['name']}:{block['line']}", flush=True)
        exec(code, namespace)


if __name__ == "__main__":
    main()
