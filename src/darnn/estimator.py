"""scikit-learn estimator around the network and the two-phase local rule.

Its hyperparameters are the fields of `NetworkConfig` and `LearningConfig` (same names) and
the training loop's; their defaults are the default recipe, ``RunConfig()`` =
configs/default.yaml, the one ``darnn train`` runs (tested). `fit` freezes the three configs
it trained with (``network_config_``, ``learning_config_``, ``train_config_``): prediction
and `partial_fit` use them, so ``set_params`` after fitting changes nothing until the next
`fit`.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import LearningConfig, NetworkConfig, check_compatible
from .devices import DTYPES
from .epoch import fit_epoch, seeded_generators, threads_for
from .learning import evaluate
from .network import Network
from .runconfig import DEFAULT_RECIPE, TrainConfig
from .threads import using_threads

# The hyperparameters that are config fields (every field is one; a new field is added to
# __init__ too). Their values are validated by the configs themselves (one validator).
NETWORK_PARAMS = tuple(f.name for f in dataclasses.fields(NetworkConfig))
LEARNING_PARAMS = tuple(f.name for f in dataclasses.fields(LearningConfig))
_NETWORK, _LEARNING, _TRAIN = DEFAULT_RECIPE.network, DEFAULT_RECIPE.learning, DEFAULT_RECIPE.train


class DARNClassifier(ClassifierMixin, BaseEstimator):
    """Deep asymmetric recurrent network trained by dynamical learning (arXiv:2509.05041).

    Hyperparameters are those of `NetworkConfig` and `LearningConfig` (same names), plus the
    training loop's (``n_epochs``, ``batch_size``, ``random_state``, ``device``,
    ``n_threads``, ``dtype``: `TrainConfig`'s epochs, batch_size, seed, device, threads,
    dtype). Defaults: the default recipe (configs/default.yaml), as ``darnn train``; so
    the default ``random_state`` is seed 0, like ``train.seed`` (None draws a fresh seed).
    Features are used as given: scale them to about [0, 1] or [-1, 1] first.

    Learned attributes: ``network_`` (the trained `Network`), ``classes_``,
    ``n_features_in_``, ``n_iter_`` (epochs run), ``history_`` (per-epoch diagnostics), the
    configs it was fitted with (``network_config_``, ``learning_config_``,
    ``train_config_``) and the random streams of its epochs (``order_generator_``,
    ``dynamics_generator_``), which `partial_fit` continues.
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (scikit-learn's own convention)
        **dict.fromkeys(NETWORK_PARAMS + LEARNING_PARAMS, "no_validation"),
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": [
            Interval(Integral, 0, 2**64 - 1, closed="both"),
            np.random.RandomState,
            None,
        ],
        "device": [str, torch.device],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "dtype": [StrOptions(set(DTYPES))],
    }

    def __init__(
        self,
        hidden: tuple[int, ...] = _NETWORK.hidden,
        w_in_strengths: tuple[float, ...] = _NETWORK.w_in_strengths,
        w_back_skip: tuple[float, ...] = _NETWORK.w_back_skip,
        w_forth_skip: tuple[float, ...] = _NETWORK.w_forth_skip,
        j_d: float = _NETWORK.j_d,
        j_strength: float = _NETWORK.j_strength,
        j_density: float = _NETWORK.j_density,
        w_in_strength: float = _NETWORK.w_in_strength,
        w_in_density: float = _NETWORK.w_in_density,
        input_to_all: bool = _NETWORK.input_to_all,
        inter: str = _NETWORK.inter,
        lambda_forward: float = _NETWORK.lambda_forward,
        lambda_backward: float = _NETWORK.lambda_backward,
        inter_fan_in: int = _NETWORK.inter_fan_in,
        w_out_strength: float = _NETWORK.w_out_strength,
        w_back_strength: float = _NETWORK.w_back_strength,
        label_encoding: str = _NETWORK.label_encoding,
        sparse_format: str = _NETWORK.sparse_format,
        readout: str = _NETWORK.readout,
        label_strength: float = _NETWORK.label_strength,
        symmetric_w_back: bool = _NETWORK.symmetric_w_back,
        activation: str = _NETWORK.activation,
        schedule: str = _LEARNING.schedule,
        warmup_sweeps: int = _LEARNING.warmup_sweeps,
        clamped_sweeps: int = _LEARNING.clamped_sweeps,
        free_sweeps: int = _LEARNING.free_sweeps,
        eval_sweeps: int = _LEARNING.eval_sweeps,
        margin_convention: str = _LEARNING.margin_convention,
        kappa_in: float = _LEARNING.kappa_in,
        lr_in: float = _LEARNING.lr_in,
        decay_in: float = _LEARNING.decay_in,
        kappa_j: float = _LEARNING.kappa_j,
        lr_j: float = _LEARNING.lr_j,
        decay_j: float = _LEARNING.decay_j,
        kappa_inter: float = _LEARNING.kappa_inter,
        lr_inter: float = _LEARNING.lr_inter,
        decay_inter: float = _LEARNING.decay_inter,
        learn_inter: bool = _LEARNING.learn_inter,
        kappa_out: float = _LEARNING.kappa_out,
        lr_out: float = _LEARNING.lr_out,
        decay_out: float = _LEARNING.decay_out,
        readout_state: str = _LEARNING.readout_state,
        p_update: float = _LEARNING.p_update,
        double_dynamics: bool = _LEARNING.double_dynamics,
        double_update: bool = _LEARNING.double_update,
        inference_backward: bool = _LEARNING.inference_backward,
        lr_out_skip: float = _LEARNING.lr_out_skip,
        decay_out_skip: float = _LEARNING.decay_out_skip,
        rule: str = _LEARNING.rule,
        tanh_rule: str = _LEARNING.tanh_rule,
        tanh_tolerance: float = _LEARNING.tanh_tolerance,
        kernel: str = _LEARNING.kernel,
        n_epochs: int = _TRAIN.epochs,
        batch_size: int = _TRAIN.batch_size,
        random_state: int | np.random.RandomState | None = _TRAIN.seed,
        device: str = _TRAIN.device,
        n_threads: int | None = _TRAIN.threads,
        dtype: str = _TRAIN.dtype,
    ):
        self.hidden = hidden
        self.j_d = j_d
        self.j_strength = j_strength
        self.j_density = j_density
        self.w_in_strength = w_in_strength
        self.w_in_density = w_in_density
        self.input_to_all = input_to_all
        self.inter = inter
        self.lambda_forward = lambda_forward
        self.lambda_backward = lambda_backward
        self.inter_fan_in = inter_fan_in
        self.w_out_strength = w_out_strength
        self.w_back_strength = w_back_strength
        self.label_encoding = label_encoding
        self.sparse_format = sparse_format
        self.readout = readout
        self.label_strength = label_strength
        self.w_in_strengths = w_in_strengths
        self.w_back_skip = w_back_skip
        self.w_forth_skip = w_forth_skip
        self.symmetric_w_back = symmetric_w_back
        self.activation = activation
        self.schedule = schedule
        self.warmup_sweeps = warmup_sweeps
        self.clamped_sweeps = clamped_sweeps
        self.free_sweeps = free_sweeps
        self.eval_sweeps = eval_sweeps
        self.margin_convention = margin_convention
        self.kappa_in = kappa_in
        self.lr_in = lr_in
        self.decay_in = decay_in
        self.kappa_j = kappa_j
        self.lr_j = lr_j
        self.decay_j = decay_j
        self.kappa_inter = kappa_inter
        self.lr_inter = lr_inter
        self.decay_inter = decay_inter
        self.learn_inter = learn_inter
        self.kappa_out = kappa_out
        self.lr_out = lr_out
        self.decay_out = decay_out
        self.readout_state = readout_state
        self.p_update = p_update
        self.double_dynamics = double_dynamics
        self.double_update = double_update
        self.inference_backward = inference_backward
        self.lr_out_skip = lr_out_skip
        self.decay_out_skip = decay_out_skip
        self.rule = rule
        self.tanh_rule = tanh_rule
        self.tanh_tolerance = tanh_tolerance
        self.kernel = kernel
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.dtype = dtype

    # ----- configuration ---------------------------------------------------------
    def network_config(self) -> NetworkConfig:
        """The `NetworkConfig` the current hyperparameters describe (validated)."""
        values = {k: getattr(self, k) for k in NETWORK_PARAMS}
        hidden = values["hidden"]
        values["hidden"] = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        return NetworkConfig(**values)

    def learning_config(self) -> LearningConfig:
        """The `LearningConfig` the current hyperparameters describe (validated)."""
        return LearningConfig(**{k: getattr(self, k) for k in LEARNING_PARAMS})

    def train_config(self) -> TrainConfig:
        """The training loop's settings as a `TrainConfig` (its validation is `darnn train`'s)."""
        return TrainConfig(
            epochs=int(self.n_epochs),
            batch_size=int(self.batch_size),
            seed=self._seed(),
            device=str(self.device),
            dtype=self.dtype,
            threads=None if self.n_threads is None else int(self.n_threads),
        )

    def _check_representable(self, X: np.ndarray, dtype: torch.dtype) -> None:
        """Check that X (finite float64, from validate_data) is finite in the network's dtype.

        1e39 is a float64 but an infinity in float32, which would silently give NaN weights.
        """
        if dtype == torch.float32 and X.size:
            largest = float(np.abs(X).max())
            limit = float(np.finfo(np.float32).max)
            if largest > limit:
                raise ValueError(
                    f"X holds values too large for float32 (largest |x| = {largest:.3g} > "
                    f"{limit:.3g}); scale the features (e.g. sklearn MinMaxScaler: the network "
                    "expects values of about [0, 1] or [-1, 1]) or use dtype='float64'"
                )

    # ----- fitting ---------------------------------------------------------------
    def fit(self, X, y) -> DARNClassifier:  # type: ignore[no-untyped-def]
        """Train for ``n_epochs`` epochs from a fresh network.

        Args:
            X (array-like): Shape (n_samples, n_features), scaled to about [0, 1] or [-1, 1].
            y (array-like): Shape (n_samples,), class labels (at least two classes).

        Returns:
            The fitted estimator.

        Raises:
            ValueError: Invalid hyperparameters or data (scikit-learn's checks, values not
                representable in ``dtype``), or a network too large for memory.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self._init_network(X, np.unique(y))
        for _ in range(self.train_config_.epochs):
            self._run_epoch(X, y)
        return self

    def partial_fit(self, X, y, classes=None) -> DARNClassifier:  # type: ignore[no-untyped-def]
        """Train one more epoch on (X, y), continuing the same random streams.

        Args:
            X (array-like): Shape (n_samples, n_features).
            y (array-like): Shape (n_samples,), labels among ``classes``.
            classes (array-like | None): Every label ever seen; required on the first call.

        Returns:
            The estimator.

        Raises:
            ValueError: ``classes`` missing on the first call, or invalid data.
        """
        first = not hasattr(self, "network_")
        if first:
            self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            self._init_network(X, np.unique(np.asarray(classes)))
        else:
            self._check_representable(X, self.network_.dtype)
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(
                    f"classes={np.unique(classes).tolist()} differ from those of the first "
                    f"call ({self.classes_.tolist()})"
                )
        self._run_epoch(X, y)
        return self

    def _init_network(self, X: np.ndarray, classes: np.ndarray) -> None:
        """Freeze the configs, check X fits the dtype, build the network and its streams."""
        network, learning, loop = self.network_config(), self.learning_config(), self.train_config()
        check_compatible(network, learning)
        if loop.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device={loop.device!r} was asked for but no CUDA device is available"
            )
        self._check_representable(X, DTYPES[loop.dtype])
        if len(classes) < 2:
            raise ValueError(
                f"need samples of at least 2 classes to fit, got 1 class: {classes.tolist()}"
            )
        self.network_config_, self.learning_config_, self.train_config_ = network, learning, loop
        self.order_generator_, self.dynamics_generator_ = seeded_generators(loop.seed)
        self.classes_ = classes
        self.network_ = Network(
            network,
            self.n_features_in_,
            len(classes),
            seed=loop.seed,
            device=loop.device,
            dtype=DTYPES[loop.dtype],
        )
        self.n_iter_ = 0
        self.history_: list[dict[str, float]] = []

    def _encode(self, y: np.ndarray) -> torch.Tensor:
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(
                f"y contains labels not seen in the first fit: {sorted(set(y[unknown].tolist()))}; "
                f"known classes are {self.classes_.tolist()}"
            )
        return torch.as_tensor(idx, dtype=torch.int64, device=self.network_.device)

    def _seed(self) -> int:
        """The seed: an integer random_state is the seed itself.

        As ``train.seed`` is for ``darnn train`` (same data, config and seed: same weights
        through either door).
        """
        state = self.random_state
        if isinstance(state, (int, np.integer)):  # in [0, 2**64): _parameter_constraints
            return int(state)
        rng = check_random_state(state)
        return int(rng.randint(np.iinfo(np.int32).max))

    def _run_epoch(self, X: np.ndarray, y: np.ndarray) -> None:
        net, loop = self.network_, self.train_config_
        xt = torch.tensor(X, dtype=net.dtype, device=net.device)
        yt = self._encode(y)
        order = torch.randperm(len(yt), generator=self.order_generator_)
        counters, _ = fit_epoch(
            net,
            xt,
            yt,
            self.learning_config_,
            loop.batch_size,
            order,
            generator=self.dynamics_generator_,
            threads=loop.threads,
        )
        self.n_iter_ += 1
        self.history_.append(
            {
                "train_accuracy": counters.fraction("correct"),
                "unstable": counters.fraction("unstable"),
            }
        )

    # ----- prediction ------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:  # type: ignore[no-untyped-def]
        """Readout fields after the evaluation dynamics (input only).

        Args:
            X (array-like): Shape (n_samples, n_features).

        Returns:
            (n_samples, n_classes) fields, or (n_samples,) for two classes (positive: the
            second class).
        """
        check_is_fitted(self, "network_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        net, batch = self.network_, self.train_config_.eval_batch_size
        self._check_representable(X, net.dtype)
        xt = torch.as_tensor(X, dtype=net.dtype)
        with using_threads(threads_for(net, min(len(xt), batch), self.train_config_.threads)):
            scores = evaluate(net, xt, None, self.learning_config_, batch)["scores"]
        out = scores.cpu().numpy()  # type: ignore[union-attr]
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out

    def predict(self, X) -> np.ndarray:  # type: ignore[no-untyped-def]
        """Predicted class of each row of X: the argmax of `decision_function`.

        Args:
            X (array-like): Shape (n_samples, n_features), scaled as the training data was.

        Returns:
            (n_samples,) array of labels from ``classes_``.
        """
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
