"""Reference harness for the Shift-wise (SW) convolution operator (ShiftwiseConv, CVPR 2025).

This package's top level is the API for implementation authors: the spec, the reference, the
``Implementation`` record and its parts, the move tables of gather-form kernels and the counts
that traffic models are built from. Implementations in ``impls/`` import only from here (and
from ``harness.cudac`` for the CUDA C tooling); everything else is the harness's own.
"""

from harness.moves import MoveTables, move_tables
from harness.reference import Branches, MergedKernels, error_bound, merge_kernels, reference_forward, small_conv
from harness.registry import (
    AUTOGRAD,
    Computes,
    Discovery,
    Execution,
    Implementation,
    Role,
    discover,
    implementations,
    native,
    validate_inputs,
)
from harness.spec import ShiftwiseSpec
from harness.traffic import compulsory_bytes, conv_output_elements, scatter_moves

__all__ = [
    "AUTOGRAD",
    "Branches",
    "Computes",
    "Discovery",
    "Execution",
    "Implementation",
    "MergedKernels",
    "MoveTables",
    "Role",
    "ShiftwiseSpec",
    "compulsory_bytes",
    "conv_output_elements",
    "discover",
    "error_bound",
    "implementations",
    "merge_kernels",
    "move_tables",
    "native",
    "reference_forward",
    "scatter_moves",
    "small_conv",
    "validate_inputs",
]
