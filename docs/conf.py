"""Sphinx configuration: numpydoc API reference, user guide, executed gallery."""

import os
import sys
import warnings
from pathlib import Path

import sklearn_clip

project = "sklearn-clip"
author = "sklearn-clip developers"
copyright = "2026, sklearn-clip developers"
version = release = sklearn_clip.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
    "sg_execution_times.rst",
]
autosummary_generate = True
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Types stay plain text: cross-references to numpy/python need intersphinx.
numpydoc_xref_param_type = False
# Every parameter documented, none unknown, in signature order; returns and
# yields documented (numpydoc validation; warnings fail the build).
numpydoc_validation_checks = {"PR01", "PR02", "PR03", "RT01", "YD01"}
# Methods inherited from scikit-learn keep scikit-learn's docstrings.
numpydoc_validation_exclude = {
    r"\.get_metadata_routing$",
    r"\.set_.*_request$",
    r"\.set_output$",
    r"\.set_params$",
    r"\.get_params$",
    r"\.fit_transform$",
    r"\.score$",
    r"\.__sklearn_tags__$",
}

# No intersphinx: the documentation builds offline (CI has no internet).

html_theme = "pydata_sphinx_theme"
html_title = "sklearn-clip"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}

# Examples read ../shared/data (real CLIP features and photos) when present.
os.environ.setdefault(
    "SKLEARN_CLIP_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message="pretrained=None")
warnings.filterwarnings("ignore", category=UserWarning, message=".*Matplotlib.*")

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
}

sys.path.insert(0, str(Path(__file__).resolve().parent))
