"""Sphinx configuration of the neurovar documentation (built offline: no intersphinx).

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (``tests/test_docs.py`` does it).
The notebooks of ``notebooks/`` are copied into ``docs/notebooks/`` (ignored by git) and
rendered from their stored outputs, never executed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

from neurovar import __version__  # noqa: E402

project = "neurovar"
author = "the neurovar developers"
copyright = "the neurovar developers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "neurovar_config_ref",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_ext"]

# no network: no intersphinx, no remote images; notebooks from their stored outputs
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autosummary_generate = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"neurovar {release}"
html_static_path: list[str] = []

# the notebooks live in ROOT/notebooks (executed by tests/test_notebooks.py); render copies
_NB_DIR = DOCS / "notebooks"
_NB_DIR.mkdir(exist_ok=True)
for _nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    _dest = _NB_DIR / _nb.name
    if not _dest.exists() or _dest.read_bytes() != _nb.read_bytes():
        # atomic: two builds at once (pytest-xdist) never read a half-written copy
        _tmp = _NB_DIR / f".{_nb.name}.{os.getpid()}.tmp"
        shutil.copyfile(_nb, _tmp)
        os.replace(_tmp, _dest)
