"""The documentation site builds offline and warning-free (``sphinx -W``), and says what the
code says: every config key, every public function, every notebook with its stored outputs."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("furo")
pytest.importorskip("numpydoc")


def build(out: Path) -> Path:
    """Build the site into ``out`` with ``-W``; the html folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    return out / "html"


@pytest.mark.slow
def test_docs_build_warning_free_and_complete(tmp_path):
    # one test, one build (~45 s): split over pytest-xdist workers it would build twice
    site = build(tmp_path)
    check_config_reference_lists_every_key(site)
    check_api_pages_document_every_public_function(site)
    check_notebooks_are_rendered_from_their_stored_outputs(site)
    check_every_concept_page_is_built(site)


@pytest.mark.slow
def test_conf_has_no_network_extension():
    conf = (DOCS / "conf.py").read_text()
    assert "sphinx.ext.intersphinx" not in conf
    assert 'nb_execution_mode = "off"' in conf


def check_config_reference_lists_every_key(site):
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from neurovar_config_ref import rows
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    from neurovar.experiment.cluster import ClusterConfig
    from neurovar.experiment.config import ExperimentConfig

    html = (site / "configuration.html").read_text()
    keys = [r[0] for r in rows(ExperimentConfig)] + [r[0] for r in rows(ClusterConfig, "cluster.")]
    assert len(keys) > 60
    missing = [k for k in keys if f">{k}<" not in html]
    assert not missing, missing
    # a description and a default from the schema are on the page
    assert "test images evaluated per cell" in html and "pgd_dlr_targeted" in html


def check_api_pages_document_every_public_function(site):
    missing = []
    for page in sorted((DOCS / "api").glob("*.md")):
        if page.stem == "index":
            continue
        module = importlib.import_module(f"neurovar.{page.stem}")
        html = (site / "api" / f"{page.stem}.html").read_text()
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and f'id="neurovar.{page.stem}.{name}"' not in html:
                missing.append(f"neurovar.{page.stem}.{name}")
    assert not missing, missing


def check_notebooks_are_rendered_from_their_stored_outputs(site):
    import json

    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        stored = sum(bool(c.get("outputs")) for c in cells if c["cell_type"] == "code")
        html = (site / "notebooks" / f"{nb.stem}.html").read_text()
        # one output block per code cell that has stored outputs, none invented
        assert html.count('class="cell_output') == stored, nb.name
    # stored figures come along as images (nothing was executed to make them)
    quick = (site / "notebooks" / "01_quickstart.html").read_text()
    assert re.search(r"<img[^>]+_images/", quick)


def check_every_concept_page_is_built(site):
    for name in ("recording", "statistics", "noise", "perturbations", "experiment", "cortex",
                 "inference"):
        assert (site / "concepts" / f"{name}.html").is_file(), name
