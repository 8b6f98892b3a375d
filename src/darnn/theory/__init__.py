"""Theory lab (docs/model.md#theory-quantities): fixed-point counts, accessibility, geometry.

Three experiments on random fully asymmetric couplings J (i.i.d. N(0, 1/N) off the
diagonal, the library's own `gaussian_coupling`), each a function returning rows of a
frozen dataclass:

- `counting`: exact enumeration of the configurations with s_i h_i > kappa for every i
  (N <= 24) against the annealed estimate E#FP = (2 Phi(J_D - kappa))^N;
- `access`: how often, and how fast, `darnn.dynamics.relax` reaches a fixed point from
  random starts, versus J_D (one module) and versus the inter-module lambda (two-module
  chain at J_D = 0);
- `geometry`: overlaps between reached fixed points, and how often a start at Hamming
  distance d from a reached fixed point relaxes to a fixed point within distance r*d of it.

`darnn.theory.plots` draws their figures (matplotlib, imported on use) and
`darnn.theory.cli` is the ``darnn theory`` command; neither is imported here, so the
science needs neither matplotlib nor argparse.
"""

from .access import (
    MODELS,
    AccessRow,
    access_experiment,
    access_memory,
    accessibility,
    transition_point,
    transition_points,
)
from .common import (
    MAX_SWEEPS,
    MEMORY_BUDGET,
    overlaps,
    random_coupling,
    random_states,
    seeded_generator,
)
from .counting import (
    DEFAULT_CHUNK,
    MAX_ENUMERATION_N,
    CountRow,
    Enumeration,
    annealed_complexity,
    annealed_count,
    count_experiment,
    count_fixed_points,
    enumerate_fixed_points,
    index_to_states,
)
from .geometry import (
    GeometryResult,
    OverlapRow,
    ReturnRow,
    flip_random,
    geometry_experiment,
    hamming,
    reached_fixed_points,
    return_fractions,
)

__all__ = [
    "DEFAULT_CHUNK",
    "MAX_ENUMERATION_N",
    "MAX_SWEEPS",
    "MEMORY_BUDGET",
    "MODELS",
    "AccessRow",
    "CountRow",
    "Enumeration",
    "GeometryResult",
    "OverlapRow",
    "ReturnRow",
    "access_experiment",
    "access_memory",
    "accessibility",
    "annealed_complexity",
    "annealed_count",
    "count_experiment",
    "count_fixed_points",
    "enumerate_fixed_points",
    "flip_random",
    "geometry_experiment",
    "hamming",
    "index_to_states",
    "overlaps",
    "random_coupling",
    "random_states",
    "reached_fixed_points",
    "return_fractions",
    "seeded_generator",
    "transition_point",
    "transition_points",
]
