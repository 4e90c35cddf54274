"""The search space: which pruner, and what fraction of each dimension it offers to remove.

A pruner offers the dimensions its scores cover (PruneNet: FFN channels; a pruner configured for
heads or depth: those too). Every offered dimension gets an :class:`Axis` of ratios, one per
distinct number of units kept: on a model with 3 KV groups a grid of 0, 0.1, …, 0.8 has only three
distinct head counts (3, 2, 1), so the axis holds three ratios, each the exact fraction removed.
A candidate is a pruner with one ratio per dimension it offers, at least one of them non-zero.

Two candidates with the same number of units kept in every dimension have the same shape, and so
the same speed, whichever pruner chose the units: :meth:`Space.structure` is that shape, the key
under which latency is measured once and cached.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from prunekit.errors import UsageError
from prunekit.payloads import Dimension
from prunekit.plugins.search.payloads import Candidate
from prunekit.slicing import kept_units

DEFAULT_RATIOS = tuple(round(0.1 * step, 10) for step in range(9))
"""0, 0.1, …, 0.8 for every dimension unless ``--ratios`` says otherwise."""


def canonical_ratio(units: int, kept: int) -> float:
    """The exact fraction ``(units − kept) / units`` removed, nudged where float rounding would make
    :func:`kept_units` keep one unit fewer."""
    ratio = (units - kept) / units
    while kept_units(units, ratio) < kept:
        ratio -= 1e-12
    return max(0.0, ratio)


@dataclass(frozen=True)
class Axis:
    """The ratios a search tries along one dimension: one per distinct number of units kept."""

    dimension: Dimension
    units: int
    """Units of the dimension in the uncompressed model (per layer; layers for depth)."""
    ratios: tuple[float, ...]
    """Ascending, each the exact fraction removed for its count of kept units."""

    @classmethod
    def build(cls, dimension: Dimension, units: int, requested: Iterable[float]) -> Axis:
        kept = sorted({kept_units(units, ratio) for ratio in requested}, reverse=True)
        return cls(dimension, units, tuple(canonical_ratio(units, count) for count in kept))

    def kept(self, ratio: float) -> int:
        return kept_units(self.units, ratio)

    def index(self, ratio: float) -> int:
        """The position on this axis of the ratio that keeps as many units as ``ratio``."""
        kept = self.kept(ratio)
        for index, candidate in enumerate(self.ratios):
            if self.kept(candidate) == kept:
                return index
        raise ValueError(f"{self.dimension.value} ratio {ratio:g} keeps {kept} units, not a point of the axis")


@dataclass(frozen=True)
class Space:
    """Pruners, the dimensions each offers, and an axis of ratios per dimension."""

    pruners: dict[str, tuple[Dimension, ...]]
    axes: dict[Dimension, Axis]

    def __post_init__(self) -> None:
        if not self.pruners:
            raise UsageError("a search needs at least one pruner among --plugins")
        for pruner, dims in self.pruners.items():
            missing = [d.value for d in dims if d not in self.axes]
            if missing:
                raise ValueError(f"{pruner} offers {', '.join(missing)} with no axis")

    def candidates(self) -> list[Candidate]:
        """Every configuration of the space, pruner by pruner, the least compressed first."""
        found = []
        for pruner, dims in self.pruners.items():
            grids = [self.axes[d].ratios for d in dims]
            for ratios in itertools.product(*grids):
                if any(r > 0 for r in ratios):
                    found.append(Candidate(pruner, dict(zip(dims, ratios))))
        return sorted(found, key=lambda c: (list(self.pruners).index(c.plugin), sum(c.ratios.values()), c.key))

    def kept(self, candidate: Candidate) -> dict[Dimension, int]:
        """Units kept per dimension of the space (all of them where the pruner leaves it alone)."""
        return {d: axis.kept(candidate.ratios.get(d, 0.0)) for d, axis in self.axes.items()}

    def structure(self, candidate: Candidate) -> str:
        """The shape of the compressed model: units kept per dimension; equal shapes run equally fast."""
        return ",".join(f"{d.value}={count}" for d, count in self.kept(candidate).items())

    def at_least_as_compressed(self, a: Candidate, b: Candidate) -> bool:
        """Whether ``a`` keeps no more units than ``b`` in any dimension (so ``a`` is no slower)."""
        kept_a, kept_b = self.kept(a), self.kept(b)
        return all(kept_a[d] <= kept_b[d] for d in self.axes)

    def fastest(self) -> list[Candidate]:
        """The most compressed candidate of each distinct shape none is more compressed than."""
        candidates = self.candidates()
        shapes: dict[str, Candidate] = {}
        for candidate in candidates:
            if not any(
                self.at_least_as_compressed(other, candidate) and self.structure(other) != self.structure(candidate)
                for other in candidates
            ):
                shapes.setdefault(self.structure(candidate), candidate)
        return list(shapes.values())

    def find(self, plugin: str, ratios: dict[Dimension, float]) -> Candidate:
        """The candidate of the space that ``plugin`` at ``ratios`` stands for."""
        if plugin not in self.pruners:
            raise UsageError(f"{plugin!r} is not a pruner of this search ({', '.join(self.pruners)})")
        snapped = {}
        for dim in self.pruners[plugin]:
            axis = self.axes[dim]
            snapped[dim] = axis.ratios[axis.index(ratios.get(dim, 0.0))]
        return Candidate(plugin, snapped)


def parse_ratios(specs: list[str] | None) -> dict[Dimension | None, list[float]]:
    """``--ratios`` values: ``START:STOP:STEP`` or ``R1,R2,...``, optionally prefixed ``DIM=`` to
    apply to one dimension only (``heads=0,0.34``); unprefixed ones apply to every dimension."""
    grids: dict[Dimension | None, list[float]] = {}
    for spec in specs or []:
        name, sep, values = spec.rpartition("=")
        dimension = None
        if sep:
            try:
                dimension = Dimension(name.strip())
            except ValueError:
                names = ", ".join(d.value for d in Dimension)
                raise UsageError(f"--ratios {spec!r}: unknown dimension {name!r}; one of {names}") from None
        grids[dimension] = _grid(spec, values)
    return grids


def _grid(spec: str, values: str) -> list[float]:
    try:
        if ":" in values:
            start, stop, step = (float(part) for part in values.split(":"))
            if step <= 0:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            grid = [round(start + i * step, 10) for i in range(count) if start + i * step <= stop + 1e-9]
        else:
            grid = [float(part) for part in values.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--ratios {spec!r}: expected START:STOP:STEP or R1,R2,... (e.g. 0:0.8:0.1)") from None
    if not grid:
        raise UsageError(f"--ratios {spec!r} holds no ratio")
    for ratio in grid:
        if not 0 <= ratio < 1:
            raise UsageError(f"--ratios {spec!r}: every ratio must be in [0, 1), got {ratio:g}")
    return grid


def build_space(
    offered: dict[str, tuple[Dimension, ...]], units: dict[Dimension, int], grids: dict[Dimension | None, list[float]]
) -> Space:
    """The space of ``offered`` dimensions per pruner, with ``units`` per dimension and the grids
    of ``--ratios`` (per dimension, else the unprefixed one, else :data:`DEFAULT_RATIOS`)."""
    dims = sorted({d for dimensions in offered.values() for d in dimensions}, key=list(Dimension).index)
    unknown = [d.value for d in grids if d is not None and d not in dims]
    if unknown:
        raise UsageError(
            f"--ratios names {', '.join(unknown)}, which none of the pruners "
            f"({', '.join(offered)}) offers; they offer {', '.join(d.value for d in dims)}"
        )
    axes = {d: Axis.build(d, units[d], grids.get(d, grids.get(None, DEFAULT_RATIOS))) for d in dims}
    return Space(dict(offered), axes)
