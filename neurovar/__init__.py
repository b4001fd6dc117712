"""neurovar: treat the units of an artificial neural network like neurons recorded in cortex."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
