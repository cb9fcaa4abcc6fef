"""`ShiftwiseSpec`: the parameters and integer tables that define one SW operator.

The semantics are in ``docs/semantics.md``; in short, small kernel ``j`` of channel ``c`` sits
at slot ``slot_h[g, c, j]`` of the horizontal strip of group ``g`` (and ``slot_v`` vertically),
``ident[g, c]`` names the kernel that feeds the identity branch, and ``active[c, j]`` is the
coarse-grained sparsity mask (a pruned kernel contributes nothing, whatever its weights hold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Seed the official ShiftwiseConv module passes to ``torch.manual_seed`` before drawing tables.
OFFICIAL_SEED = 123

_TABLE_DTYPE = np.int32


def _frozen_int_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only int32 copy of ``value``, or a ValueError naming the expected shape."""
    array = np.asarray(value)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    array = array.astype(_TABLE_DTYPE, copy=True)
    array.flags.writeable = False
    return array


def _frozen_bool_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != bool:
        raise ValueError(f"{name} must be a boolean mask, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    array = array.copy()
    array.flags.writeable = False
    return array


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _validated_sizes(big_kernel: Any, small_kernel: Any, channels: Any, groups: Any):
    """(M, k, C, E, nk) as ints, or a ValueError naming the bad size."""
    big = _check_positive_int("big_kernel", big_kernel)
    k = _check_positive_int("small_kernel", small_kernel)
    channels = _check_positive_int("channels", channels)
    groups = _check_positive_int("groups", groups)
    if k % 2 == 0:
        raise ValueError(f"small_kernel must be odd, got {k}")
    if big % 2 == 0:
        raise ValueError(f"big_kernel must be odd, got {big}")
    if big < k:
        raise ValueError(f"big_kernel must be >= small_kernel, got big_kernel={big} < small_kernel={k}")
    return big, k, channels, groups, -(-big // k)


@dataclass(frozen=True, eq=False)
class ShiftwiseSpec:
    """One SW operator: sizes M, k, C, E and its tables (validated on construction).

    Tables are read-only int32 / bool numpy arrays:

    - ``slot_h``, ``slot_v``: (E, C, nk), a permutation of ``0..nk-1`` for every (g, c);
    - ``ident``: (E, C), in ``0..nk-1``;
    - ``active``: (C, nk) bool; all true unless kernels are pruned.
    """

    big_kernel: int
    small_kernel: int
    channels: int
    groups: int
    slot_h: np.ndarray = field(repr=False)
    slot_v: np.ndarray = field(repr=False)
    ident: np.ndarray = field(repr=False)
    active: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        big, k, channels, groups, nk = _validated_sizes(
            self.big_kernel, self.small_kernel, self.channels, self.groups
        )
        set_ = object.__setattr__  # frozen dataclass: normalise fields once, here
        for name, value in zip(("big_kernel", "small_kernel", "channels", "groups"), (big, k, channels, groups)):
            set_(self, name, value)
        permutation_shape = (groups, channels, nk)
        for name in ("slot_h", "slot_v"):
            table = _frozen_int_array(name, getattr(self, name), permutation_shape)
            not_permutation = (np.sort(table, axis=-1) != np.arange(nk)).any(axis=-1)
            if not_permutation.any():
                g, c = np.argwhere(not_permutation)[0]
                raise ValueError(
                    f"{name}[{g}, {c}] must be a permutation of 0..{nk - 1} (nk = ceil({big}/{k})), "
                    f"got {table[g, c].tolist()}"
                )
            set_(self, name, table)
        ident = _frozen_int_array("ident", self.ident, (groups, channels))
        if ((ident < 0) | (ident >= nk)).any():
            g, c = np.argwhere((ident < 0) | (ident >= nk))[0]
            raise ValueError(f"ident[{g}, {c}] must be in 0..{nk - 1}, got {ident[g, c]}")
        set_(self, "ident", ident)
        active = np.ones((channels, nk), dtype=bool) if self.active is None else self.active
        set_(self, "active", _frozen_bool_array("active", active, (channels, nk)))

    # ----------------------------------------------------------------- derived sizes
    @property
    def nk(self) -> int:
        """Small kernels per channel: ceil(M / k)."""
        return -(-self.big_kernel // self.small_kernel)

    @property
    def padding(self) -> int:
        """Padding of the small grouped conv: k - 1."""
        return self.small_kernel - 1

    @property
    def extra_pad(self) -> int:
        """Border the small conv adds on each side of the map: padding - k // 2 (= k // 2)."""
        return self.padding - self.small_kernel // 2

    @property
    def shifts(self) -> tuple[int, ...]:
        """Shift of slot t: M // 2 - t * k - padding."""
        return tuple(
            self.big_kernel // 2 - t * self.small_kernel - self.padding for t in range(self.nk)
        )

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Shape of the small kernels in the official layout: (C * nk, 1, k, k)."""
        return (self.channels * self.nk, 1, self.small_kernel, self.small_kernel)

    @property
    def sparsity(self) -> float:
        """Fraction of small kernels pruned."""
        return float(1.0 - self.active.mean())

    # ----------------------------------------------------------------- constructors
    @classmethod
    def official(
        cls, *, big_kernel: int, small_kernel: int, channels: int, groups: int
    ) -> ShiftwiseSpec:
        """The tables the official ShiftwiseConv code draws, bit for bit.

        The official module calls ``torch.manual_seed(123)`` and draws, with the global CPU
        generator: per group, one ``randperm(nk)`` per channel (horizontal); the same again
        (vertical); per group one ``randint(0, nk, [C])`` (identity). A draw ``L`` puts kernel
        ``L[pos]`` at slot ``pos``. We replay that on a private generator, so torch's global
        RNG state is untouched.
        """
        import torch  # local: the spec itself does not need torch

        *_, nk = _validated_sizes(big_kernel, small_kernel, channels, groups)
        generator = torch.Generator().manual_seed(OFFICIAL_SEED)

        def slots_from_draws() -> np.ndarray:
            draws = np.array(
                [
                    [torch.randperm(nk, generator=generator).numpy() for _ in range(channels)]
                    for _ in range(groups)
                ]
            ).reshape(groups, channels, nk)
            return np.argsort(draws, axis=-1)  # kernel j -> the position it was drawn at

        slot_h = slots_from_draws()
        slot_v = slots_from_draws()
        ident = np.stack(
            [torch.randint(0, nk, [channels], generator=generator).numpy() for _ in range(groups)]
        )
        return cls(big_kernel, small_kernel, channels, groups, slot_h, slot_v, ident)

    @classmethod
    def random(
        cls,
        *,
        big_kernel: int,
        small_kernel: int,
        channels: int,
        groups: int,
        seed: int,
        sparsity: float = 0.0,
    ) -> ShiftwiseSpec:
        """Random slot permutations and identity picks from ``seed``, then ``prune``."""
        _check_seed(seed, "ShiftwiseSpec.random")
        *_, nk = _validated_sizes(big_kernel, small_kernel, channels, groups)
        rng = np.random.default_rng(seed)
        slot_h = rng.permuted(np.broadcast_to(np.arange(nk), (groups, channels, nk)), axis=-1)
        slot_v = rng.permuted(np.broadcast_to(np.arange(nk), (groups, channels, nk)), axis=-1)
        ident = rng.integers(0, nk, size=(groups, channels))
        spec = cls(big_kernel, small_kernel, channels, groups, slot_h, slot_v, ident)
        return spec.pruned(sparsity, seed=seed)

    def pruned(self, sparsity: float, *, seed: int) -> ShiftwiseSpec:
        """A copy with ``round(sparsity * C * nk)`` small kernels pruned, chosen from ``seed``.

        Coarse-grained: a whole k x k filter is pruned. Kernels pruned already stay pruned.
        """
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"ShiftwiseSpec.pruned: sparsity must be a number in [0, 1], got {sparsity!r}")
        _check_seed(seed, "ShiftwiseSpec.pruned")
        total = self.channels * self.nk
        count = round(sparsity * total)
        chosen = np.random.default_rng([seed, 0x5BA25E]).choice(total, size=count, replace=False)
        active = self.active.copy().reshape(-1)
        active[chosen] = False
        return self.with_active(active.reshape(self.channels, self.nk))

    def with_active(self, active: Any) -> ShiftwiseSpec:
        """A copy with the sparsity mask replaced."""
        return ShiftwiseSpec(
            self.big_kernel, self.small_kernel, self.channels, self.groups,
            self.slot_h, self.slot_v, self.ident, np.asarray(active),
        )  # fmt: skip

    # ----------------------------------------------------------------- official tables
    def to_official_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(pad_hv, idx_identit)`` as the official code holds them (int32).

        ``pad_hv`` is (C*nk, 2E): column g holds the horizontal shift of small kernel
        ``c*nk + j`` in group g, column E+g its vertical shift. ``idx_identit`` is (C, E)
        holding ``c*nk + ident[g, c]``. The sparsity mask is not part of these tables.
        """
        shifts = np.asarray(self.shifts, dtype=_TABLE_DTYPE)
        c, e, nk = self.channels, self.groups, self.nk
        horizontal = shifts[self.slot_h].transpose(1, 2, 0).reshape(c * nk, e)
        vertical = shifts[self.slot_v].transpose(1, 2, 0).reshape(c * nk, e)
        pad_hv = np.concatenate([horizontal, vertical], axis=1).astype(_TABLE_DTYPE)
        idx_identit = (np.arange(c)[:, None] * nk + self.ident.T).astype(_TABLE_DTYPE)
        # C order, as the official code's tensors: kernels index them as flat row-major arrays.
        return np.ascontiguousarray(pad_hv), np.ascontiguousarray(idx_identit)

    @classmethod
    def from_official_tables(
        cls,
        pad_hv: Any,
        idx_identit: Any,
        *,
        big_kernel: int,
        small_kernel: int,
        active: Any = None,
    ) -> ShiftwiseSpec:
        """Rebuild a spec from the official ``pad_hv`` (C*nk, 2E) and ``idx_identit`` (C, E)."""
        pad_hv, idx_identit = np.asarray(pad_hv), np.asarray(idx_identit)
        if pad_hv.ndim != 2 or pad_hv.shape[1] % 2 or pad_hv.shape[1] == 0:
            raise ValueError(f"pad_hv must have shape (C*nk, 2E), got {pad_hv.shape}")
        big_kernel, k, *_, nk = _validated_sizes(big_kernel, small_kernel, 1, 1)
        groups = pad_hv.shape[1] // 2
        if pad_hv.shape[0] % nk:
            raise ValueError(
                f"pad_hv must have C*nk rows with nk = ceil({big_kernel}/{k}) = {nk}, "
                f"got {pad_hv.shape[0]} rows"
            )
        channels = pad_hv.shape[0] // nk
        if idx_identit.shape != (channels, groups):
            raise ValueError(
                f"idx_identit must have shape (C, E) = ({channels}, {groups}), got {idx_identit.shape}"
            )
        # shift s = M//2 - t*k - (k-1)  =>  t = (M//2 - (k-1) - s) / k
        numerator = big_kernel // 2 - (k - 1) - pad_hv.astype(np.int64)
        slots = numerator // k
        bad = (numerator % k != 0) | (slots < 0) | (slots >= nk)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"pad_hv[{row}, {col}] = {pad_hv[row, col]} is not a shift of M={big_kernel}, "
                f"k={k} (valid shifts: {[big_kernel // 2 - t * k - (k - 1) for t in range(nk)]})"
            )
        slots = slots.reshape(channels, nk, 2 * groups).transpose(2, 0, 1)  # (2E, C, nk)
        ident = idx_identit.astype(np.int64) - np.arange(channels)[:, None] * nk
        if ((ident < 0) | (ident >= nk)).any():
            c, g = np.argwhere((ident < 0) | (ident >= nk))[0]
            raise ValueError(
                f"idx_identit[{c}, {g}] = {idx_identit[c, g]} is not a kernel of channel {c} "
                f"(expected {c * nk}..{c * nk + nk - 1})"
            )
        return cls(
            big_kernel, small_kernel, channels, groups,
            slots[:groups], slots[groups:], ident.T, active,
        )  # fmt: skip

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "big_kernel": self.big_kernel,
            "small_kernel": self.small_kernel,
            "channels": self.channels,
            "groups": self.groups,
            "slot_h": self.slot_h.tolist(),
            "slot_v": self.slot_v.tolist(),
            "ident": self.ident.tolist(),
            "active": self.active.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShiftwiseSpec:
        expected = {"big_kernel", "small_kernel", "channels", "groups", "slot_h", "slot_v", "ident", "active"}
        if not isinstance(data, dict) or set(data) != expected:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"a ShiftwiseSpec dict needs exactly the keys {sorted(expected)}, got {got}")
        return cls(**{name: np.asarray(value) if isinstance(value, list) else value for name, value in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ShiftwiseSpec:
        return cls.from_dict(json.loads(text))

    # ----------------------------------------------------------------- identity
    def _key(self) -> tuple:
        """The spec's identity, built once (its tables are read-only): specs key many caches,
        and copying C x nk tables per lookup costs ~20 us at C = 492."""
        key = self.__dict__.get("_identity")
        if key is None:
            key = (
                self.big_kernel, self.small_kernel, self.channels, self.groups,
                self.slot_h.tobytes(), self.slot_v.tobytes(), self.ident.tobytes(), self.active.tobytes(),
            )  # fmt: skip
            object.__setattr__(self, "_identity", key)
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShiftwiseSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"ShiftwiseSpec(big_kernel={self.big_kernel}, small_kernel={self.small_kernel}, "
            f"channels={self.channels}, groups={self.groups}, nk={self.nk}, sparsity={self.sparsity:.3g})"
        )


def _check_seed(seed: object, where: str) -> None:
    """numpy's own message ("expected non-negative integer") names no argument."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative integer, got {seed!r}")
