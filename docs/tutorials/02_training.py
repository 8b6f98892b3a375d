# %% [markdown]
# # Training on Fashion-MNIST from Python
#
# `darnn train` is a thin wrapper around `darnn.training.train`: a validated `RunConfig`
# (data, network, learning, train sections: [config keys](../model.md#config-keys)) and a run
# directory in, a summary with per-epoch metrics out. This tutorial trains the shipped
# `narrow_fashion` recipe (one module of 200 units, where learning the recurrent network
# pays) on a small slice of Fashion-MNIST, reads its metrics, and compares it with **random
# features**: the same network with learning off. It then does the same by hand with
# `fit_epoch` and `evaluate`, the loop both `darnn train` and the estimator use.
#
# Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` that
# `scripts/setup.sh` installs (`darnn data list` shows where else it is looked for).
# The budgets are tiny (3,000 training samples, 2 epochs); the README's results use the
# full data.

# %%
import json
from pathlib import Path

import torch

from darnn import evaluate
from darnn.data import load_data
from darnn.epoch import fit_epoch, seeded_generators
from darnn.runconfig import load_run_config
from darnn.shipped import find
from darnn.training import build_network, train

# %% [markdown]
# ## A config: a shipped recipe plus overrides
#
# `load_run_config(path, overrides)` layers a YAML file and `section.key=value` overrides
# (the strings `darnn train` takes after its options) on top of the default recipe, and
# validates the result; a wrong key or value raises `ConfigError` naming it.

# %%
small = [
    "data.limit_train=3000",  # keep 3,000 training samples
    "data.val_size=1000",  # and 1,000 for validation
    "data.download=false",  # never reach the network from a tutorial
    "train.epochs=2",
    "train.threads=1",
]
config = load_run_config(find("recipe", "narrow_fashion"), small)
print(config.network.hidden, config.network.j_d, config.learning.lr_j, config.train.epochs)

# %% [markdown]
# ## Training and reading the metrics
#
# `train` claims the run directory (it must not exist or be empty), writes `config.yaml`,
# `meta.json`, a checkpoint after every epoch, `metrics.jsonl`, the model file and two
# plots, and returns a summary. The best epoch is chosen on validation, never on test.

# %%
summary = train(config, "runs/darnn", progress=False)
print({k: summary[k] for k in ("status", "epochs", "val_acc", "test_acc", "best_val_epoch")})
print(sorted(p.name for p in Path("runs/darnn").iterdir()))

# %% [markdown]
# Each epoch's record holds the accuracies, how often the free phase ended at a fixed point
# (`converged`) and how many sweeps it took, the symmetry of the learned couplings, field
# statistics and speed. The same records are the lines of `metrics.jsonl`.

# %%
last = summary["metrics"][-1]
print(f"train {last['train_acc']:.3f}  val {last['val_acc']:.3f}  test {last['test_acc']:.3f}")
print(f"free phase converged {last['converged']:.2f}, coupling symmetry {last['symmetry']}")
print(f"{last['samples_per_s']:.0f} samples/s")
lines = Path("runs/darnn/metrics.jsonl").read_text().splitlines()
assert json.loads(lines[-1])["test_acc"] == last["test_acc"]

# %% [markdown]
# ## Random features: the same network with learning off
#
# With J = 0, no label feedback and W_in frozen, the state is s = sign(W_in x) and only the
# readout learns, by the same perceptron rule ([Recipes](../recipes.md) explains the
# baselines). Whether darnn beats it is the question every recipe has to answer; at this
# tiny budget the gap is noise-sized, so read the numbers, not the sign.

# %%
random_features = [
    "network.j_strength=0",
    "network.w_back_strength=0",
    "learning.lr_in=0",
    "learning.lr_j=0",
]
rf_config = load_run_config(find("recipe", "narrow_fashion"), small + random_features)
rf = train(rf_config, "runs/random-features", progress=False)
print(f"darnn           val {summary['val_acc']:.3f}  test {summary['test_acc']:.3f}")
print(f"random features val {rf['val_acc']:.3f}  test {rf['test_acc']:.3f}")

# %% [markdown]
# ## The same loop by hand: `fit_epoch` and `evaluate`
#
# `load_data` reads the data section (the seeded stratified split); `build_network` the
# network section; `fit_epoch` runs one `learning_step` per batch over a given order;
# `evaluate` returns the accuracy and the dynamics' statistics. The seeded generators make
# the result the same as `train`'s, sample for sample.

# %%
data = load_data(config.data)
X, y = torch.as_tensor(data.X_train), torch.as_tensor(data.y_train)
X_val, y_val = torch.as_tensor(data.X_val), torch.as_tensor(data.y_val)
print("train", tuple(X.shape), "validation", tuple(X_val.shape))

net = build_network(config, X.shape[1], data.n_classes, torch.device("cpu"), torch.float32)
order_stream, dynamics_stream = seeded_generators(config.train.seed)
for epoch in range(config.train.epochs):
    order = torch.randperm(len(X), generator=order_stream)
    counters, _ = fit_epoch(
        net, X, y, config.learning, config.train.batch_size, order, generator=dynamics_stream
    )
    result = evaluate(net, X_val, y_val, config.learning)
    print(f"epoch {epoch + 1}: train {counters.fraction('correct'):.3f}, "
          f"val {result['accuracy']:.3f}")  # fmt: skip

# %% [markdown]
# Same data, config and seed, same loop: the weights, and so the validation accuracy, are
# those of the `train` run above.

# %%
assert abs(result["accuracy"] - summary["val_acc"]) < 1e-6, (result["accuracy"], summary)
