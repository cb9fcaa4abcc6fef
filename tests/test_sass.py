"""The SASS parser on a real nvdisasm listing (sm_80, nvdisasm 13.5) of a small kernel whose
loop the compiler unrolled, and on a fresh NVRTC build of the same kernel."""

from pathlib import Path

import pytest

from harness.cudac import CudaSource, compile_cuda
from harness.cudac.sass import kernel_sass, parse

SOURCE = """extern "C" __global__ void poly(const float* x, float* y, int n, int reps) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = x[i], acc = 0.f;
    for (int r = 0; r < reps; ++r) acc = acc * a + 1.0f;
    y[i] = acc;
}
"""

#: ``nvdisasm -c`` of SOURCE built by NVRTC for sm_80 (the trailing NOP padding left out).
LISTING = """.text.poly:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_CTAID.X ;
        /*0020*/                   S2R R3, SR_TID.X ;
        /*0030*/                   IMAD R0, R0, c[0x0][0x0], R3 ;
        /*0040*/                   ISETP.GE.AND P0, PT, R0, c[0x0][0x170], PT ;
.L_x_8:
        /*0050*/               @P0 EXIT ;
        /*0060*/                   MOV R8, c[0x0][0x174] ;
        /*0070*/                   ULDC.64 UR4, c[0x0][0x118] ;
        /*0080*/                   HFMA2.MMA R5, -RZ, RZ, 0, 0 ;
        /*0090*/                   SHF.R.S32.HI R3, RZ, 0x1f, R0 ;
        /*00a0*/                   ISETP.GE.AND P0, PT, R8, 0x1, PT ;
        /*00b0*/              @!P0 BRA `(.L_x_0) ;
        /*00c0*/                   IADD3 R4, R8, -0x1, RZ ;
        /*00d0*/                   MOV R7, 0x4 ;
        /*00e0*/                   ISETP.GE.U32.AND P0, PT, R4, 0x3, PT ;
        /*00f0*/                   IMAD.WIDE R6, R0, R7, c[0x0][0x160] ;
        /*0100*/                   LOP3.LUT R4, R8, 0x3, RZ, 0xc0, !PT ;
        /*0110*/                   LDG.E R2, [R6.64] ;
        /*0120*/                   MOV R5, RZ ;
        /*0130*/              @!P0 BRA `(.L_x_1) ;
        /*0140*/                   IADD3 R6, -R4, c[0x0][0x174], RZ ;
        /*0150*/                   HFMA2.MMA R5, -RZ, RZ, 0, 0 ;
        /*0160*/                   ISETP.GT.AND P0, PT, R6, RZ, PT ;
        /*0170*/              @!P0 BRA `(.L_x_2) ;
        /*0180*/                   ISETP.GT.AND P1, PT, R6, 0xc, PT ;
        /*0190*/                   PLOP3.LUT P0, PT, PT, PT, PT, 0x80, 0x0 ;
        /*01a0*/              @!P1 BRA `(.L_x_3) ;
        /*01b0*/                   PLOP3.LUT P0, PT, PT, PT, PT, 0x8, 0x0 ;
.L_x_4:
        /*01c0*/                   FFMA R5, R2, R5, 1 ;
        /*01d0*/                   IADD3 R6, R6, -0x10, RZ ;
        /*01e0*/                   FFMA R5, R2, R5, 1 ;
        /*01f0*/                   ISETP.GT.AND P1, PT, R6, 0xc, PT ;
        /*0200*/                   FFMA R5, R2, R5, 1 ;
        /*0210*/                   FFMA R5, R2, R5, 1 ;
        /*0220*/                   FFMA R5, R2, R5, 1 ;
        /*0230*/                   FFMA R5, R2, R5, 1 ;
        /*0240*/                   FFMA R5, R2, R5, 1 ;
        /*0250*/                   FFMA R5, R2, R5, 1 ;
        /*0260*/                   FFMA R5, R2, R5, 1 ;
        /*0270*/                   FFMA R5, R2, R5, 1 ;
        /*0280*/                   FFMA R5, R2, R5, 1 ;
        /*0290*/                   FFMA R5, R2, R5, 1 ;
        /*02a0*/                   FFMA R5, R2, R5, 1 ;
        /*02b0*/                   FFMA R5, R2, R5, 1 ;
        /*02c0*/                   FFMA R5, R2, R5, 1 ;
        /*02d0*/                   FFMA R5, R2, R5, 1 ;
        /*02e0*/               @P1 BRA `(.L_x_4) ;
.L_x_3:
        /*02f0*/                   ISETP.GT.AND P1, PT, R6, 0x4, PT ;
        /*0300*/              @!P1 BRA `(.L_x_5) ;
        /*0310*/                   FFMA R5, R2, R5, 1 ;
        /*0320*/                   PLOP3.LUT P0, PT, PT, PT, PT, 0x8, 0x0 ;
        /*0330*/                   IADD3 R6, R6, -0x8, RZ ;
        /*0340*/                   FFMA R5, R2, R5, 1 ;
        /*0350*/                   FFMA R5, R2, R5, 1 ;
        /*0360*/                   FFMA R5, R2, R5, 1 ;
        /*0370*/                   FFMA R5, R2, R5, 1 ;
        /*0380*/                   FFMA R5, R2, R5, 1 ;
        /*0390*/                   FFMA R5, R2, R5, 1 ;
        /*03a0*/                   FFMA R5, R2, R5, 1 ;
.L_x_5:
        /*03b0*/                   ISETP.NE.OR P0, PT, R6, RZ, P0 ;
        /*03c0*/              @!P0 BRA `(.L_x_1) ;
.L_x_2:
        /*03d0*/                   IADD3 R6, R6, -0x4, RZ ;
        /*03e0*/                   FFMA R5, R2, R5, 1 ;
        /*03f0*/                   ISETP.NE.AND P0, PT, R6, RZ, PT ;
        /*0400*/                   FFMA R5, R2, R5, 1 ;
        /*0410*/                   FFMA R5, R2, R5, 1 ;
        /*0420*/                   FFMA R5, R2, R5, 1 ;
        /*0430*/               @P0 BRA `(.L_x_2) ;
.L_x_1:
        /*0440*/                   ISETP.NE.AND P0, PT, R4, RZ, PT ;
        /*0450*/              @!P0 BRA `(.L_x_0) ;
.L_x_6:
        /*0460*/                   IADD3 R4, R4, -0x1, RZ ;
        /*0470*/                   FFMA R5, R2, R5, 1 ;
        /*0480*/                   ISETP.NE.AND P0, PT, R4, RZ, PT ;
        /*0490*/               @P0 BRA `(.L_x_6) ;
.L_x_0:
        /*04a0*/                   LEA R2, P0, R0, c[0x0][0x168], 0x2 ;
        /*04b0*/                   LEA.HI.X R3, R0, c[0x0][0x16c], R3, 0x2, P0 ;
        /*04c0*/                   STG.E [R2.64], R5 ;
.L_x_9:
        /*04d0*/                   EXIT ;
.L_x_7:
        /*04e0*/                   BRA `(.L_x_7);
.L_x_10:
"""


def test_counts_classes_and_drops_the_end_of_kernel_self_branch():
    (poly,) = parse(LISTING).values()
    mix = poly.mix
    assert (mix["FFMA"], mix["LDG"], mix["STG"], mix["FADD"], mix["LDS"]) == (29, 1, 1, 0, 0)
    assert poly.instructions[-1].opcode == "EXIT"  # the BRA-to-itself after it is not code
    assert mix.total == len(poly.instructions) == 78


def test_finds_the_innermost_loops_and_the_hot_one():
    (poly,) = parse(LISTING).values()
    sizes = [(poly.loop_mix(loop).total, poly.loop_mix(loop)["FFMA"]) for loop in poly.loops]
    assert sizes == [(19, 16), (7, 4), (4, 1)]  # the x16 unrolled loop, the x4 one, the remainder
    hot = poly.loop_mix(poly.hot_loop)
    assert (hot.total, hot["FFMA"], hot["INT"], hot["CTRL"]) == (19, 16, 2, 1)


def test_shortest_path_outside_loops():
    (poly,) = parse(LISTING).values()
    # entry (5), the early EXIT not taken (1), the reps < 1 test (6), then the store and EXIT (4)
    assert poly.outside_loops == 16


def test_a_fresh_build_parses_the_same_way(tmp_path):
    path = tmp_path / "poly.cu"
    path.write_text(SOURCE)
    (poly,) = kernel_sass(compile_cuda(CudaSource.read(path), "sm_90").cubin).values()
    hot = poly.loop_mix(poly.hot_loop)
    assert hot["FFMA"] >= 4 and hot["FFMA"] / hot.total > 0.5
    assert poly.mix["LDG"] == 1 and poly.mix["STG"] == 1


def test_shared_wavefronts_count_vector_widths():
    text = (
        ".text.k:\n"
        "        /*0000*/                   LDS R4, [R2] ;\n"
        "        /*0010*/                   LDS.64 R4, [R2+0x8] ;\n"
        "        /*0020*/                   LDS.128 R4, [R2+0x10] ;\n"
        "        /*0030*/                   STS.U8 [R2], R4 ;\n"
        "        /*0040*/                   EXIT ;\n"
    )
    (k,) = parse(text).values()
    assert (k.mix["LDS"], k.mix["STS"], k.mix.shared_wavefronts) == (3, 1, 1 + 2 + 4 + 1)
