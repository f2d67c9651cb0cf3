"""The API reference lists every public name of every package, and only public names."""

from __future__ import annotations

import importlib
import re

import pytest
from docs_blocks import DOCS

PACKAGES = ("core", "data", "dist", "ckpt", "log", "export", "trainer")
_AUTODOC = re.compile(
    r"^\.\. auto(?:class|function|data|exception|attribute)::\s+(?P<target>\S+)\s*$", re.MULTILINE
)


def documented(package: str) -> list[str]:
    page = DOCS / "api" / f"{package}.rst"
    return _AUTODOC.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_has_an_autodoc_entry_on_its_page(package: str) -> None:
    module = importlib.import_module(f"helios.{package}")
    targets = documented(package)
    names = [target.removeprefix(f"helios.{package}.") for target in targets]
    assert all(t.startswith(f"helios.{package}.") for t in targets), targets
    missing = sorted(set(module.__all__) - set(names))
    assert not missing, f"docs/api/{package}.rst lacks {missing}"
    extra = sorted(set(names) - set(module.__all__))
    assert not extra, f"docs/api/{package}.rst documents names outside __all__: {extra}"
    assert len(names) == len(set(names)), "a name is documented twice"


@pytest.mark.parametrize("package", PACKAGES)
def test_each_page_documents_its_package_module(package: str) -> None:
    text = (DOCS / "api" / f"{package}.rst").read_text(encoding="utf-8")
    assert f".. automodule:: helios.{package}\n" in text


def test_the_reference_index_links_every_page() -> None:
    index = (DOCS / "api" / "index.rst").read_text(encoding="utf-8")
    entries = re.findall(r"^   (\w+)$", index, flags=re.MULTILINE)
    assert entries == list(PACKAGES)


def test_the_readme_links_the_docs_and_keeps_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    assert "(docs/index.rst)" in readme
    assert "sphinx-build -W" in readme
    assert "uv run python docs/examples/digits.py" in readme
    assert "uv run pytest" in readme


def test_ci_builds_the_docs_with_warnings_as_errors() -> None:
    ci = (DOCS.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "uv run sphinx-build -W --keep-going -q -b html docs docs/_build/html" in ci
    assert ci.index("sphinx-build") < ci.index("uv build --all-packages")
