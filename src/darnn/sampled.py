"""The local rule's sparse update in C, with the bits of torch's sampled product.

`SparseCoupling.add_outer_` forms W <- (W + alpha post^T pre) (1 - decay) on the stored
entries with torch.sparse.sampled_addmm. For a training batch of 16, 32, ... 256 samples
`add_outer_` here does the same in the fused library (darnn.fused; the C code is in
fused.c): it sums sixteen entries' dot products together, in the order torch sums each one,
so that the weights are the same bit for bit, and a row with no non-zero post term only
decays. About 40 % of torch's time per entry at batch 16 and 60 % at batch 64;
docs/speed.md has the measurements. `calibrate` checks, once, that the result is torch's
here; where it is not (or the CPU has no AVX-512), the update stays torch's own.
`post_terms` forms the rule's post-synaptic terms in one call instead of three tensor
operations.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from .couplings import SparseCoupling, batch_minor
from .fused import library

GROUP = 16  # the C update takes batches of GROUP to GROUP * MAX_GROUPS samples, in groups
MAX_GROUPS = 16  # (as fused.c)


@functools.cache
def calibrate() -> tuple[int, int] | None:
    """How this torch sums and forms its CPU sampled product: ``(combine, wide)``, or None.

    The C update (`add_outer_`) reproduces torch.sparse.sampled_addmm bit for bit. Two
    things vary between builds and CPUs: whether the last step ``alpha * dot + beta *
    value`` is fused into a multiply-add, and which way (combine 0, 1, 2: see fused.c); and
    whether torch's vectors hold 8 or 16 lanes (wide 0, 1), which sets the order of the sums
    of a batch of more than 16. Each pair is tried on small random problems at batches 16
    and 64 (rows with no, few and many non-zero post terms; zero weights, where the sign of
    a zero sum shows); the one that gives torch's bits on both is returned, or None when none
    does (a torch whose sum runs in another order): the update then stays torch's own.
    """
    lib = library()
    if lib is None or not lib.darnn_update_compiled():  # built without AVX-512 (fused.c)
        return None
    gen = torch.Generator().manual_seed(0)
    problems = []
    for batch in (GROUP, 4 * GROUP):
        n_out, n_in = 96, 80
        support = torch.rand(n_out, n_in, generator=gen) < 0.3
        weights = torch.randn(n_out, n_in, generator=gen)
        weights[:4], weights[4:6] = 0.0, -0.0  # rows where the sign of a zero sum shows
        active = (torch.rand(batch, n_out, generator=gen) < torch.linspace(0, 1, n_out)).float()
        post = active * torch.where(torch.rand(batch, n_out, generator=gen) < 0.5, 1.0, -1.0)
        pre = torch.rand(batch, n_in, generator=gen) * (
            torch.rand(batch, n_in, generator=gen) < 0.7
        )
        ref = SparseCoupling.from_dense(weights, support)
        ref.add_outer_(post, pre, 0.0123456789, 6.29e-5)
        problems.append((weights, support, post, pre, ref.values.view(torch.int32)))
    for way in ((combine, wide) for wide in (0, 1) for combine in range(3)):
        for weights, support, post, pre, expected in problems:
            got = SparseCoupling.from_dense(weights, support)
            if _update(lib, got, post, pre, 0.0123456789, 6.29e-5, way, 1) != 0 or not (
                torch.equal(got.values.view(torch.int32), expected)
            ):
                break
        else:
            return way
    return None


def add_outer_(
    coupling: SparseCoupling, post: Tensor, pre: Tensor, alpha: float, decay: float = 0.0
) -> bool:
    """`SparseCoupling.add_outer_` in C, with its bits; False (nothing done) where it can't.

    It covers the local rule's updates: a batch of a multiple of GROUP samples (up to GROUP
    * MAX_GROUPS) on the CPU in float32, post-synaptic terms in {-1, 0, 1}, finite
    pre-synaptic ones, and a torch whose result `calibrate` could reproduce. Sixteen
    entries' sums are formed together (half of torch's time per entry at batch 16), and a
    row with no non-zero post term only decays (docs/speed.md).
    """
    values, n_out, n_in = coupling.values, coupling.n_out, coupling.n_in
    batch = post.shape[0]
    if (
        batch % GROUP != 0
        or not GROUP <= batch <= GROUP * MAX_GROUPS
        or post.shape != (batch, n_out)
        or pre.shape != (batch, n_in)
        or not (post.dtype == pre.dtype == values.dtype == torch.float32)
        or not (post.is_cpu and pre.is_cpu and values.is_cpu)
        or coupling.col.dtype != torch.int32
        or not values.is_contiguous()
    ):
        return False
    way = calibrate()
    lib = library()
    if way is None or lib is None:
        return False
    return _update(lib, coupling, post, pre, alpha, decay, way, torch.get_num_threads()) == 0


def post_terms(s: Tensor, h: Tensor, threshold: float) -> tuple[Tensor, int] | None:
    """``(s * h <= threshold) * s`` in C, with torch's bits, and how many s h <= threshold.

    For CPU float32 (B, n) ``s`` and ``h``, ``s`` contiguous or batch-minor (``post`` is laid
    out as ``s``, as torch lays it out), ``h`` at any strides; None (nothing done) otherwise.
    """
    lib = library()
    if (
        lib is None
        or s.ndim != 2
        or not (s.is_cpu and h.is_cpu)
        or not (s.dtype == h.dtype == torch.float32)
        or s.shape != h.shape
        or not (s.stride() == (1, s.shape[0]) or s.is_contiguous() or s.T.is_contiguous())
    ):
        return None
    post = torch.empty_like(s)  # s's strides
    below = lib.darnn_post_f32(
        *s.shape, s.data_ptr(), *s.stride(), h.data_ptr(), *h.stride(), threshold, post.data_ptr()
    )
    return post, below


def _update(
    lib: ctypes.CDLL, coupling: SparseCoupling, post: Tensor, pre: Tensor, alpha: float,
    decay: float, way: tuple[int, int], threads: int,
) -> int:  # fmt: skip
    keep = 1.0 - decay  # the arguments SparseCoupling.add_outer_ hands torch
    post, pre = batch_minor(post), batch_minor(pre)  # stored as (n, B)
    return lib.darnn_sampled_update_f32(
        coupling.n_out, coupling.crow.data_ptr(), coupling.col.data_ptr(),
        coupling.values.data_ptr(), post.data_ptr(), pre.data_ptr(), coupling.n_in,
        post.shape[0], alpha * keep, keep, *way, threads,
    )  # fmt: skip
