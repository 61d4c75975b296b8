"""semisam: SAM-assisted pseudo-labels for semi-supervised 3D segmentation.

The code lives in the repository folders ``schemas/``, ``store/``, ``workers/``,
``pipeline/`` and ``training/``, installed as ``semisam.schemas`` etc. (the package-dir
mapping in pyproject.toml; see README.md, "How imports resolve, and why").

When this file is imported from a checkout rather than from the installed link tree, i.e. the
repository root is on ``sys.path`` before site-packages (pytest, ``python -c`` in the root,
and Ray workers, which get the driver's folder on their path), the sibling folders are
added to this package's ``__path__`` so that ``semisam.pipeline`` is ``pipeline/`` exactly as
the mapping says. An installed copy (wheel or strict editable link tree) has no
``pyproject.toml`` beside its ``semisam/`` folder and is left as it is.
"""

import os as _os

__version__ = "0.1.0"


def _checkout_root() -> "str | None":
    here = _os.path.dirname(_os.path.abspath(__file__))  # not realpath: a link tree stays put
    root = _os.path.dirname(here)
    if _os.path.isdir(_os.path.join(here, "pipeline")):
        return None  # a layout that already holds the subpackages
    if not _os.path.isfile(_os.path.join(root, "pyproject.toml")):
        return None
    if not _os.path.isfile(_os.path.join(root, "pipeline", "__init__.py")):
        return None
    return root


_root = _checkout_root()
if _root is not None and _root not in __path__:
    __path__.append(_root)
del _root
