"""Equivalence checking of an implementation against the float64 rep-merged reference.

Two modes:

- ``exact``: inputs and weights are small integers, so every partial sum is an integer far
  below 2**24 and float32 arithmetic is exact in any order. The implementation must match the
  float64 reference bit for bit (the case is refused if its magnitudes could reach 2**24).
- ``float``: standard normal data; every element must lie within ``harness.error_bound``
  (a worst-case rounding bound, per element) of the float64 reference.

In both modes the weights of pruned kernels are NaN (they must not reach the output), the
inputs are compared bit for bit before and after the call (no mutation), and, for
implementations that declare autograd, the gradients of x and weight for integer upstream
gradients must match the reference's bit for bit (exact integer arithmetic again).
"""


from harness.checking.check import (
    CheckResult,
    CheckSkipped,
    Failure,
    MismatchError,
    assert_matches_reference,
    check,
)
from harness.checking.compare import Expected, References, bitwise_equal, compare_with_reference, describe_mismatch, expected_result
from harness.checking.inputs import DTYPES, LAYOUTS, MODES, CheckCase, make_inputs

__all__ = [
    "DTYPES",
    "Expected",
    "LAYOUTS",
    "MODES",
    "CheckCase",
    "CheckResult",
    "CheckSkipped",
    "Failure",
    "MismatchError",
    "References",
    "assert_matches_reference",
    "bitwise_equal",
    "check",
    "compare_with_reference",
    "describe_mismatch",
    "expected_result",
    "make_inputs",
]
