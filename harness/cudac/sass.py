"""The SASS instruction mix of a cubin's kernels, from ``nvdisasm`` (nvidia-cuda-nvdisasm wheel).

Static counts per kernel, by class (FFMA, FADD, LDS, LDG, STG, RED, BAR, integer, control,
...), and the same for each innermost loop: a backward branch's range that holds no other
backward branch. The hot loop of a kernel is its innermost loop with the most floating-point
work instructions (FFMA, FADD, FMUL, DFMA, DADD, RED).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

#: Instruction classes in report order; opcodes not listed are "other".
CLASSES = ("FFMA", "FADD", "FMUL", "FP64", "LDS", "STS", "LDG", "STG", "LOCAL", "RED", "BAR", "INT", "CTRL", "OTHER")
_CLASS_OF = {
    "FFMA": "FFMA", "FADD": "FADD", "FMUL": "FMUL",
    "DFMA": "FP64", "DADD": "FP64", "DMUL": "FP64",
    "LDS": "LDS", "LDSM": "LDS", "STS": "STS",
    "LDG": "LDG", "STG": "STG", "LD": "LDG", "ST": "STG",
    "LDL": "LOCAL", "STL": "LOCAL",
    "RED": "RED", "REDG": "RED", "ATOM": "RED", "ATOMG": "RED", "ATOMS": "RED", "REDUX": "RED",
    "BAR": "BAR",
    "BRA": "CTRL", "BRX": "CTRL", "JMP": "CTRL", "EXIT": "CTRL", "RET": "CTRL", "CALL": "CTRL",
    "BSSY": "CTRL", "BSYNC": "CTRL", "BREAK": "CTRL", "BMOV": "CTRL", "WARPSYNC": "CTRL", "NOP": "CTRL",
    "YIELD": "CTRL", "BPT": "CTRL", "KILL": "CTRL",
}  # fmt: skip
_INT = re.compile(r"^U?(I\w*|LOP3?|SHF|SHL|SHR|LEA|SEL|MOV|PRMT|S2R|S2UR|CS2R|LDC|ULDC|R2UR|P2R|R2P|PLOP3|VOTEU?|FLO|POPC|BREV|ISETP|ISCADD|SGXT|BMSK|MOV32I|IMNMX|VIADD|VIMNMX)(\.|$)")
_FLOAT_WORK = ("FFMA", "FADD", "FMUL", "FP64", "RED")
#: The pipes an instruction issues to, as Nsight Compute names them (sm_80, sm_90): "fma"
#: (FP32 FFMA/FADD/FMUL), "imad" (IMAD/IMUL: the fma pipe's heavy half, at the integer rate),
#: "alu" (the other integer, logic, compare, move and conversion work), "uniform" (the U* datapath), "lsu"
#: (shared, global, local memory and atomics), "other" (branches, barriers, FP64, the rest).
PIPES = ("fma", "imad", "alu", "uniform", "lsu", "other")
_LSU = ("LDS", "STS", "LDG", "STG", "LOCAL", "RED")

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Z0-9_]+)*)([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
_SECTION = re.compile(r"^\s*\.text\.(\w+):")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # without modifiers: "FFMA", "LDS", "BRA"
    text: str
    target: str | None = None  # branch target label
    predicated: bool = False

    @property
    def shared_wavefronts(self) -> int:
        """Shared-memory cycles of a warp-wide LDS/STS without bank conflicts: 128 bytes each."""
        if self.kind not in ("LDS", "STS"):
            return 0
        width = re.search(r"\.(64|128)\b", self.text)
        return int(width.group(1)) // 32 if width else 1

    @property
    def kind(self) -> str:
        if self.opcode in _CLASS_OF:
            return _CLASS_OF[self.opcode]
        return "INT" if _INT.match(self.opcode) else "OTHER"


def pipe_of(instruction: Instruction) -> str:
    kind = instruction.kind
    if kind in ("FFMA", "FADD", "FMUL"):
        return "fma"
    if kind in _LSU:
        return "lsu"
    if kind == "INT":
        if instruction.opcode.startswith("U"):
            return "uniform"
        return "imad" if instruction.opcode.startswith(("IMAD", "IMUL")) else "alu"
    return "other"


def pipe_counts(instructions) -> dict:
    """Instructions by pipe (``PIPES``)."""
    found = Counter(pipe_of(i) for i in instructions)
    return {pipe: found.get(pipe, 0) for pipe in PIPES}


@dataclass(frozen=True)
class Mix:
    """Counts of instructions by class (``CLASSES``)."""

    counts: dict = field(default_factory=dict)
    #: conflict-free shared-memory cycles of its LDS/STS (an LDS.64 takes 2, an LDS.128 4)
    shared_wavefronts: int = 0

    @classmethod
    def of(cls, instructions) -> Mix:
        found = Counter(i.kind for i in instructions)
        return cls({k: found.get(k, 0) for k in CLASSES}, sum(i.shared_wavefronts for i in instructions))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def work(self) -> int:
        """Floating-point work instructions (FFMA, FADD, FMUL, FP64, RED)."""
        return sum(self.counts[k] for k in _FLOAT_WORK)

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]


@dataclass(frozen=True)
class KernelSass:
    kernel: str
    instructions: tuple[Instruction, ...]
    loops: tuple[tuple[int, int], ...]  # innermost loops as (first, last) instruction indices
    all_loops: tuple[tuple[int, int], ...] = ()  # every backward branch's range
    labels: dict = field(default_factory=dict, compare=False)  # label -> instruction index

    @property
    def mix(self) -> Mix:
        return Mix.of(self.instructions)

    @property
    def outside_loops(self) -> int:
        """Instructions outside loops on the shortest path from the entry to the kernel's last
        EXIT (early exits not taken, calls not followed, each branch's cheaper side): the
        least a warp that does the kernel's work issues besides its loops."""
        inside = {i for first, last in self.all_loops for i in range(first, last + 1)}
        code = self.instructions
        exits = [i for i, ins in enumerate(code) if ins.opcode == "EXIT"]
        if not exits:
            return len(code) - len(inside)
        final = max((i for i in exits if not code[i].predicated), default=exits[-1])
        infinity = float("inf")
        dist = [infinity] * (final + 1)
        dist[0] = 0 if 0 in inside else 1
        for i in range(final):
            if dist[i] == infinity:
                continue
            ins, successors = code[i], []
            if ins.opcode in ("BRA", "JMP") and ins.target in self.labels:
                target = self.labels[ins.target]
                if target > i:
                    successors.append(target)
                if ins.predicated or target <= i:  # a loop's back edge: leave the loop
                    successors.append(i + 1)
            elif ins.opcode == "EXIT" or ins.opcode == "RET":
                if ins.predicated:
                    successors.append(i + 1)
            else:
                successors.append(i + 1)
            for j in successors:
                if j <= final:
                    dist[j] = min(dist[j], dist[i] + (0 if j in inside else 1))
        return int(dist[final]) if dist[final] != infinity else len(code) - len(inside)

    def loop_mix(self, loop: tuple[int, int]) -> Mix:
        return Mix.of(self.instructions[loop[0] : loop[1] + 1])

    def access_widths(self, loop: tuple[int, int], kind: str) -> int:
        """Bytes per lane of the most common ``kind`` (LDS, STS) access in ``loop`` (4 without one)."""
        widths = Counter(4 * i.shared_wavefronts for i in self.instructions[loop[0] : loop[1] + 1] if i.kind == kind)
        return widths.most_common(1)[0][0] if widths else 4

    @property
    def hot_loop(self) -> tuple[int, int] | None:
        """The innermost loop with the most FFMA (a conv loop), else the one with the most
        floating-point work instructions; None without either."""
        scored = [(self.loop_mix(loop)["FFMA"], self.loop_mix(loop).work, -(loop[1] - loop[0]), loop) for loop in self.loops]
        scored = [s for s in scored if s[1] > 0]
        return max(scored)[3] if scored else None


def nvdisasm_path() -> str:
    from cuda.pathfinder import find_nvidia_binary_utility

    path = find_nvidia_binary_utility("nvdisasm")
    if path is None:
        raise RuntimeError("nvdisasm not found; install the nvidia-cuda-nvdisasm wheel")
    return path


def disassemble(cubin: bytes) -> str:
    """``nvdisasm -c`` of a cubin (code sections only)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "kernels.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([nvdisasm_path(), "-c", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvdisasm failed:\n{done.stderr}")
    return done.stdout


def parse(listing: str) -> dict[str, KernelSass]:
    """Each kernel's instructions and innermost loops from an ``nvdisasm`` listing. The
    trailing ``BRA`` to itself after the last ``EXIT`` and the ``NOP`` padding after it are
    not code and are left out."""
    kernels: dict[str, list] = {}
    labels: dict[str, dict[str, int]] = {}
    current = None
    for line in listing.splitlines():
        if section := _SECTION.match(line):
            current = section.group(1)
            kernels[current], labels[current] = [], {}
            continue
        if current is None:
            continue
        if label := _LABEL.match(line):
            labels[current][label.group(1)] = len(kernels[current])
            continue
        if m := _LINE.search(line):
            target = _TARGET.search(m.group(5))
            kernels[current].append(
                Instruction(int(m.group(1), 16), m.group(3), (m.group(3) + m.group(4) + m.group(5)).strip(),
                            target.group(1) if target else None, bool(m.group(2)) and "PT" not in m.group(2))  # fmt: skip
            )
    result = {}
    for name, instructions in kernels.items():
        # Drop the end-of-kernel self-branch and the padding after it.
        end = len(instructions)
        for index in range(len(instructions) - 1, -1, -1):
            i = instructions[index]
            if i.opcode == "BRA" and labels[name].get(i.target) == index:
                end = index
                break
        instructions = instructions[:end]
        backward = [
            (labels[name][i.target], index)
            for index, i in enumerate(instructions)
            if i.opcode in ("BRA", "JMP") and i.target in labels[name] and labels[name][i.target] <= index
        ]
        innermost = tuple(sorted(
            {(a, b) for a, b in backward if not any((c, d) != (a, b) and a <= c and d <= b for c, d in backward)}
        ))  # fmt: skip
        result[name] = KernelSass(name, tuple(instructions), innermost, tuple(sorted(set(backward))), dict(labels[name]))
    return result


def kernel_sass(cubin: bytes) -> dict[str, KernelSass]:
    return parse(disassemble(cubin))
