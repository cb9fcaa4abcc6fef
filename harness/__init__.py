"""Reference harness for the Shift-wise (SW) convolution operator (ShiftwiseConv, CVPR 2025)."""

from harness.reference import Branches, MergedKernels, error_bound, merge_kernels, reference_forward, small_conv
from harness.registry import Computes, Discovery, Implementation, discover, implementations, validate_inputs
from harness.spec import ShiftwiseSpec

__all__ = [
    "Branches",
    "Computes",
    "Discovery",
    "Implementation",
    "MergedKernels",
    "ShiftwiseSpec",
    "discover",
    "error_bound",
    "implementations",
    "merge_kernels",
    "reference_forward",
    "small_conv",
    "validate_inputs",
]
