"""Read the code blocks of a reStructuredText page, for the tests that run them."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*(?P<language>\S*)[ \t]*$")


@dataclass(frozen=True)
class CodeBlock:
    """One ``.. code-block::`` of a page: its language, first line number and source."""

    language: str
    line: int
    source: str


def code_blocks(page: Path, language: str | None = None) -> list[CodeBlock]:
    """Every ``.. code-block::`` of ``page`` in order, or only those of ``language``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        index += 1
        if match is None:
            continue
        indent = len(match["indent"])
        # Directive options (":caption: ...") come first, then a blank line, then the body.
        while index < len(lines) and lines[index].strip().startswith(":"):
            index += 1
        body: list[str] = []
        first = index + 1
        while index < len(lines):
            line = lines[index]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
            index += 1
        source = textwrap.dedent("\n".join(body)).strip("\n")
        if language is None or match["language"] == language:
            blocks.append(CodeBlock(match["language"], first, source + "\n"))
    return blocks
