"""Spatial initialisation of new Jacobi window positions on an image token grid.

The initialisers are general to token grids (video frames use them too), so they live in the core,
:mod:`mmaccel.drafting.grid_init`; this module keeps the image modality's names for them.
"""

from mmaccel.drafting.grid_init import (
    HorizontalRepeat,
    HorizontalSample,
    RandomInit,
    SpatialInit,
    VerticalRepeat,
)

__all__ = ["HorizontalRepeat", "HorizontalSample", "RandomInit", "SpatialInit", "VerticalRepeat"]
