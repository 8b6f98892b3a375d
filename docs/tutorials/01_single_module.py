# %% [markdown]
# # A single module and its dynamics
#
# One module of N binary units s_i = ±1 with random, fully **asymmetric** couplings
# J_ij ~ N(0, 1/N) (J_ij and J_ji independent) and a self-coupling J_D on the diagonal
# ([the model](../model.md#a-single-module)). A configuration is a fixed point when every
# unit agrees with its field, s_i h_i > κ with h_i = Σ_{j≠i} J_ij s_j + J_D s_i.
#
# This tutorial counts the fixed points exactly at small N, compares the count with the
# annealed formula, then asks the question the paper is about: do simple dynamics *reach*
# them? Everything here is `darnn.theory` and `darnn.relax`; it runs in seconds.

# %%
import math

import matplotlib

matplotlib.use("Agg")  # no display needed; the figures are written as PNG files
import matplotlib.pyplot as plt
import torch

from darnn import Recurrent, relax, theory

# %% [markdown]
# ## Counting fixed points exactly
#
# `theory.random_coupling` draws J (dense, zero diagonal, float64). For N ≤ 24 every one of
# the 2^N configurations can be checked: `enumerate_fixed_points` does it for one (J_D, κ),
# `count_fixed_points` for a whole grid of J_D in one pass.

# %%
N = 14
J = theory.random_coupling(N, torch.Generator().manual_seed(0))
print(J.shape, J.dtype, "diagonal:", float(J.diagonal().abs().max()))

result = theory.enumerate_fixed_points(J, j_d=0.5, kappa=0.0, return_states=True)
print(f"{result.count} fixed points out of 2^{N} = {2**N} configurations at J_D = 0.5")
s = result.states[0].double()
h = J @ s + 0.5 * s
print("every unit agrees with its field:", bool((s * h > 0).all()))

# %%
j_d_values = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
counts = theory.count_fixed_points(J, j_d_values, kappas=[0.0])[:, 0]
for j_d, c in zip(j_d_values, counts.tolist()):
    print(f"J_D = {j_d:4.2f}: {c:6d} fixed points")

# %% [markdown]
# ## The annealed formula
#
# With fully asymmetric J the rows are independent, so the expected number of fixed points
# is E#FP = (2 Φ(J_D − κ))^N, a growth rate Σ = ln 2 + ln Φ(J_D − κ) per unit
# ([annealed complexity](../model.md#annealed-complexity)). `count_experiment` averages the
# exact counts over random J; its rows carry the measured (1/N) ln E#FP and the formula.

# %%
rows = theory.count_experiment(sizes=(8, 12), j_d_values=j_d_values, kappas=(0.0,), n_samples=8)
for r in rows:
    if r.n == 12:
        print(f"J_D={r.j_d:4.2f}: measured {r.complexity:+.3f}, annealed {r.annealed_n:+.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
for n in (8, 12):
    sel = [r for r in rows if r.n == n]
    ax.plot([r.j_d for r in sel], [r.complexity for r in sel], "o", label=f"measured, N={n}")
grid = [i / 20 for i in range(31)]
ax.plot(grid, [theory.annealed_complexity(x) for x in grid], "k-", label="ln 2 + ln Φ(J_D)")
ax.set(xlabel="J_D", ylabel="(1/N) ln E#FP", title="Fixed points are exponentially many")
ax.legend()
fig.savefig("complexity.png", dpi=80, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ![The measured complexity against the annealed formula](../figures/tutorial01_complexity.png)
#
# Fixed points exist in exponential number for every J_D > κ, even at J_D = 0. The
# paper's point is that the dynamics cannot *find* them there.
#
# ## Relaxing: does the dynamics reach a fixed point?
#
# `Recurrent.from_matrices` turns a matrix into a module with the self-coupling J_D, and
# `darnn.relax` runs the dynamics (synchronous, layer-sequential or asynchronous sweeps)
# from a given start under constant external fields, here zero. It returns the final
# states, which samples reached a fixed point, and the sweeps each took (all (B,) tensors).

# %%
N, starts = 200, 16
J = theory.random_coupling(N, torch.Generator().manual_seed(1), dtype=torch.float32)
start = theory.random_states(starts, N, torch.Generator().manual_seed(2), torch.float32)
zero = [torch.zeros(starts, N)]
for j_d in (0.0, 0.5, 1.0):
    module = Recurrent.from_matrices([J], j_d=j_d)
    out = relax(module, zero, [start], max_sweeps=100, schedule="asynchronous")
    done = out.sweeps[out.converged].float()
    median = done.median().item() if len(done) else math.nan
    print(f"J_D = {j_d}: {len(done)}/{starts} starts at a fixed point, median {median} sweeps")

# %% [markdown]
# ## Accessibility versus J_D
#
# `theory.accessibility` repeats this over several random J and starts for each J_D and
# reports the converged fraction, its standard error and the median number of sweeps
# ([accessibility](../model.md#accessibility)). `transition_point` interpolates where half
# the runs converge. The sizes here are tiny; [the theory lab](../theory.md) has the full
# curves (N up to 10 000).

# %%
values = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
fig, ax = plt.subplots(figsize=(5, 3.5))
for n in (50, 200):
    rows = theory.accessibility(
        n, values, schedule="asynchronous", n_couplings=2, n_starts=8, max_sweeps=100
    )
    half = theory.transition_point([r.value for r in rows], [r.converged for r in rows])
    print(f"N = {n}: half the runs converge at J_D ≈ {half:.2f}")
    ax.errorbar(
        [r.value for r in rows], [r.converged for r in rows], [r.stderr for r in rows],
        marker="o", capsize=2, label=f"N = {n}",
    )  # fmt: skip
ax.set(xlabel="J_D", ylabel="fraction converged", title="Accessible fixed points need J_D")
ax.legend()
fig.savefig("accessibility.png", dpi=80, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ![Fraction of starts at a fixed point, against J_D](../figures/tutorial01_accessibility.png)
#
# At J_D = 0 no run converges, although fixed points are plentiful; above a threshold of
# order 0.5 (growing slowly with N) every run does, in a few sweeps. The same role is played
# between modules by the inter-module coupling λ: `theory.accessibility(n, lambdas,
# model="chain")` sweeps it on a two-module chain at J_D = 0, the setting of
# [tutorial 3](03_lambda_protocol.md).

# %%
rows = theory.accessibility(
    60, [0.0, 1.0, 2.0], model="chain", schedule="sequential", n_couplings=1, n_starts=8
)
for r in rows:
    print(f"λ = {r.value}: converged {r.converged:.2f}, module overlap {r.module_overlap:.2f}")
assert math.isfinite(rows[-1].module_overlap)
