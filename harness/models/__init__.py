"""Networks built on the SW operator and its peers, and the model-level benchmark (Table 7).

``ShiftwiseConv2d`` (``layers``) is the SW layer as a module, with any registered
implementation plugged in; ``build_network(name, impl=...)`` (``networks``) builds SW-T/S,
SLaK-T/S and UniRepLKNet-T/S, random-initialised, in eval mode; ``bench`` runs the ``models``
suite and ``table7`` turns its results into the report's "Table 7 on this machine" section.
"""

from harness.models.layers import MergedShiftwiseConv2d, ShiftwiseConv2d, merge_all, resolve_impl, set_impl
from harness.models.networks import NETWORKS, build_network

__all__ = [
    "NETWORKS",
    "MergedShiftwiseConv2d",
    "ShiftwiseConv2d",
    "build_network",
    "merge_all",
    "resolve_impl",
    "set_impl",
]
