"""Sphinx configuration of the Helios documentation.

Build it (warnings are errors, as in CI):

    uv run sphinx-build -W --keep-going -b html docs docs/_build/html

No extension needs the network: intersphinx is deliberately off, so references to PyTorch and
the standard library render as plain text instead of links.
"""

from __future__ import annotations

project = "Helios"
author = "the Helios authors"
copyright = "the Helios authors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "examples"]
root_doc = "index"
# Furo: a maintained theme whose content column is wide enough for the Trainer's code blocks
# (the default theme cut them at 1280 px), with a light and a dark scheme.
html_theme = "furo"
html_title = "Helios"
html_theme_options = {
    "navigation_with_keys": True,
}

# Google-style docstrings (ruff's "google" convention), as the code writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Show `Path`, not `pathlib.Path`, in signatures.
python_use_unqualified_type_names = True

# helios.core.Model documents its class attributes under "Class attributes:"; read it as
# napoleon's "Attributes" section.
napoleon_custom_sections = [("Class attributes", "Attributes")]
