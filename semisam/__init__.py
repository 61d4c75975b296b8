"""semisam: SAM-assisted pseudo-labels for semi-supervised 3D segmentation.

The code lives in the repository folders ``schemas/``, ``store/``, ``workers/``,
``pipeline/`` and ``training/``, installed as ``semisam.schemas`` etc.
"""

__version__ = "0.1.0"
