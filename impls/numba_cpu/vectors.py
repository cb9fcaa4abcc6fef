"""LLVM-IR pieces the row kernels of both forms share (Numba intrinsics): the vector type and
the ``llvm.fma`` declaration for an element type, zeroed accumulators, and the rows' stores."""

from __future__ import annotations

#: Bytes per SIMD vector the kernels are written for (AVX-512); narrower machines stay correct.
VECTOR_BYTES = 64


def vector_fma(context, builder, dtype):
    """(vector type, itemsize, lanes, the ``llvm.fma`` function on that vector) for ``dtype``."""
    from llvmlite import ir

    element = context.get_data_type(dtype)
    itemsize = context.get_abi_sizeof(element)
    lanes = VECTOR_BYTES // itemsize
    vector = ir.VectorType(element, lanes)
    name = f"llvm.fma.v{lanes}f{8 * itemsize}"
    try:
        fma = builder.module.get_global(name)
    except KeyError:
        fma = ir.Function(builder.module, ir.FunctionType(vector, [vector] * 3), name=name)
    return vector, itemsize, lanes, fma


def zeroed_accumulators(builder, vector, count: int) -> list:
    """``count`` stack slots (promoted to registers by LLVM) holding zero vectors."""
    from llvmlite import ir
    from numba.core import cgutils

    slots = [cgutils.alloca_once(builder, vector) for _ in range(count)]
    for slot in slots:
        builder.store(ir.Constant(vector, None), slot)
    return slots


def store_rows(builder, out, base, step, slots, vector, itemsize: int) -> None:
    """out[base + r*step : +lanes] = slots[r] for every row r."""
    from llvmlite import ir

    i64 = ir.IntType(64)
    for row, slot in enumerate(slots):
        address = builder.gep(out, [builder.add(base, builder.mul(ir.Constant(i64, row), step))])
        builder.store(builder.load(slot), builder.bitcast(address, vector.as_pointer()), align=itemsize)
