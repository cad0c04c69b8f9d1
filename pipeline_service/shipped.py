"""Where the files the package ships beside its code are.

pyproject.toml installs the ecosystem's top-level folders inside the package
(``models/`` as ``pipeline_service/models``, ``init/`` as ``pipeline_service/init_data``);
a source checkout (an editable install included) has them at the top of the tree.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def shipped(installed: str, source: str) -> Path:
    """``installed`` (a path inside the package) when the wheel put it there, else ``source``
    (the same file or folder at the top of the source tree)."""
    path = PACKAGE_DIR / installed
    return path if path.exists() else PACKAGE_DIR.parent / source
