# %% [markdown]
# # A hyperparameter sweep on Optuna, and its summary
#
# `darnn sweep` searches a space of config keys with Optuna: each trial is a `darnn train`
# run of the base config with the trial's values, reporting the validation accuracy after
# every epoch (so a pruner can stop bad trials early). The study lives in a database:
# SQLite by default (`study.db` in the sweep's folder), PostgreSQL for several machines.
# This tutorial runs the same thing from Python, on scikit-learn's 8×8 digits with six tiny
# trials, then reads the summary that `darnn sweep summary` prints. It needs the `sweep`
# extra (`pip install "darnn[sweep]"`; `scripts/setup.sh` installs it).
#
# The command-line equivalent:
#
# ```bash
# darnn sweep --space digits_quick --set data.name=digits --set network.hidden=[100] \
#     --set train.epochs=2 --trials 6 --out sweep
# darnn sweep summary --storage sweep/study.db
# ```

# %%
from pathlib import Path

import optuna

from darnn.shipped import find
from darnn.sweep.study import prepare_sweep
from darnn.sweep.summary import summarize
from darnn.sweep.workers import run_sweep

# %% [markdown]
# ## The search space
#
# A space file maps `section.key` to a range (`low`, `high`, optionally `log`) or a list
# of `choices`; every key is checked against the config schema before anything runs. The
# shipped `digits_quick` space varies the three learning rates, the hidden margin, J_D and
# the label feedback.

# %%
space = find("space", "digits_quick")
print("\n".join(line for line in space.read_text().splitlines() if not line.startswith("#")))

# %% [markdown]
# ## Preparing and running the sweep
#
# `prepare_sweep` checks everything a user can get wrong (the space, the base config and its
# overrides, the storage, the metric) and writes nothing; `run_sweep` creates the study and
# runs the trials, here in this process (`workers=1`). A fixed `sampler_seed` makes the
# trials' values reproducible.

# %%
spec = prepare_sweep(
    space_path=str(space),
    trials=6,
    config_overrides=[
        "data.name=digits",
        "network.hidden=[100]",
        "train.epochs=2",
        "train.threads=1",
    ],
    out="sweep",
    pruner="none",
    sampler_seed=0,
)
print("study", spec.study, "in", spec.storage)
result = run_sweep(spec, workers=1)
print(result.tally.describe())
print("best trial:", result.best.number, f"{result.best.value:.3f}", result.best.params)

# %% [markdown]
# ## The summary
#
# `summarize` is `darnn sweep summary`: the trial counts, a table of the best trials with
# their values, any failures, and Optuna's plots (history, parameter importances, ...) as
# PNG files next to the database.

# %%
summary = summarize(spec.storage, spec.study, out="sweep", top=3)
print(summary.text)
print([p.name for p in summary.plots])

# %% [markdown]
# ## The study is an ordinary Optuna study
#
# Anything Optuna offers works on it: load it from the same storage and read its trials.
# Each trial's run directory (config, metrics, model) is under the sweep's folder.

# %%
study = optuna.load_study(study_name=spec.study, storage=spec.storage)
for trial in sorted(study.trials, key=lambda t: -(t.value or 0))[:3]:
    print(trial.number, trial.state.name, f"{trial.value:.3f}", trial.params)
print(sorted(p.name for p in Path("sweep").iterdir())[:8])
