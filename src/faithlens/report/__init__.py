"""Plots and reports. Only this package and the CLI draw.

Importing it registers the plotter of every faithlens result (:mod:`.registry`), which
``Result.plot`` dispatches to; ``import faithlens`` imports it.
"""

from .registry import register_all

register_all()
