"""scikit-learn estimator around the network and the two-phase local rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import LearningConfig, NetworkConfig, check_compatible, shown
from .epoch import fit_epoch, seeded_generators, threads_for
from .learning import evaluate
from .network import Network
from .threads import using_threads

_NETWORK_KEYS = tuple(f.name for f in dataclasses.fields(NetworkConfig))
_LEARNING_KEYS = tuple(f.name for f in dataclasses.fields(LearningConfig))
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Hyperparameter defaults are the config dataclasses' (one set of defaults; tested).
_NET, _LEARNING = NetworkConfig(), LearningConfig()
_EVAL_BATCH = 2048


class DARNClassifier(ClassifierMixin, BaseEstimator):
    """Deep asymmetric recurrent network trained by dynamical learning (arXiv:2509.05041).

    Hyperparameters are those of `NetworkConfig` and `LearningConfig` (same names, same
    defaults: the authors' JAX recipe with dense couplings), plus the training loop's.
    Features are used as given: scale them to about [0, 1] or [-1, 1] first.

    Learned attributes: ``network_`` (the trained `Network`), ``classes_``,
    ``n_features_in_``, ``n_iter_`` (epochs run) and ``history_`` (per-epoch diagnostics).
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = _NET.hidden,
        j_d: float = _NET.j_d,
        j_strength: float = _NET.j_strength,
        j_density: float = _NET.j_density,
        w_in_strength: float = _NET.w_in_strength,
        w_in_density: float = _NET.w_in_density,
        input_to_all: bool = _NET.input_to_all,
        inter: str = _NET.inter,
        lambda_forward: float = _NET.lambda_forward,
        lambda_backward: float = _NET.lambda_backward,
        inter_fan_in: int = _NET.inter_fan_in,
        w_out_strength: float = _NET.w_out_strength,
        w_back_strength: float = _NET.w_back_strength,
        label_encoding: str = _NET.label_encoding,
        sparse_format: str = _NET.sparse_format,
        readout: str = _NET.readout,
        label_strength: float = _NET.label_strength,
        w_in_strengths: tuple[float, ...] = _NET.w_in_strengths,
        w_back_skip: tuple[float, ...] = _NET.w_back_skip,
        w_forth_skip: tuple[float, ...] = _NET.w_forth_skip,
        symmetric_w_back: bool = _NET.symmetric_w_back,
        schedule: str = _LEARNING.schedule,
        warmup_sweeps: int = _LEARNING.warmup_sweeps,
        clamped_sweeps: int = _LEARNING.clamped_sweeps,
        free_sweeps: int = _LEARNING.free_sweeps,
        eval_sweeps: int = _LEARNING.eval_sweeps,
        margin_convention: str = _LEARNING.margin_convention,
        kappa_in: float = _LEARNING.kappa_in,
        kappa_j: float = _LEARNING.kappa_j,
        kappa_inter: float = _LEARNING.kappa_inter,
        kappa_out: float = _LEARNING.kappa_out,
        lr_in: float = _LEARNING.lr_in,
        lr_j: float = _LEARNING.lr_j,
        lr_inter: float = _LEARNING.lr_inter,
        lr_out: float = _LEARNING.lr_out,
        decay_in: float = _LEARNING.decay_in,
        decay_j: float = _LEARNING.decay_j,
        decay_inter: float = _LEARNING.decay_inter,
        decay_out: float = _LEARNING.decay_out,
        learn_inter: bool = _LEARNING.learn_inter,
        readout_state: str = _LEARNING.readout_state,
        p_update: float = _LEARNING.p_update,
        double_dynamics: bool = _LEARNING.double_dynamics,
        double_update: bool = _LEARNING.double_update,
        inference_backward: bool = _LEARNING.inference_backward,
        lr_out_skip: float = _LEARNING.lr_out_skip,
        decay_out_skip: float = _LEARNING.decay_out_skip,
        n_epochs: int = 10,
        batch_size: int = 16,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        n_threads: int | None = None,
        dtype: str = "float32",
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
        self.schedule = schedule
        self.warmup_sweeps = warmup_sweeps
        self.clamped_sweeps = clamped_sweeps
        self.free_sweeps = free_sweeps
        self.eval_sweeps = eval_sweeps
        self.margin_convention = margin_convention
        self.kappa_in = kappa_in
        self.kappa_j = kappa_j
        self.kappa_inter = kappa_inter
        self.kappa_out = kappa_out
        self.lr_in = lr_in
        self.lr_j = lr_j
        self.lr_inter = lr_inter
        self.lr_out = lr_out
        self.decay_in = decay_in
        self.decay_j = decay_j
        self.decay_inter = decay_inter
        self.decay_out = decay_out
        self.learn_inter = learn_inter
        self.readout_state = readout_state
        self.p_update = p_update
        self.double_dynamics = double_dynamics
        self.double_update = double_update
        self.inference_backward = inference_backward
        self.lr_out_skip = lr_out_skip
        self.decay_out_skip = decay_out_skip
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.dtype = dtype

    # ----- configuration ---------------------------------------------------------
    def network_config(self) -> NetworkConfig:
        values = {k: getattr(self, k) for k in _NETWORK_KEYS}
        hidden = values["hidden"]
        values["hidden"] = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        return NetworkConfig(**values)

    def learning_config(self) -> LearningConfig:
        return LearningConfig(**{k: getattr(self, k) for k in _LEARNING_KEYS})

    def _check_loop_params(self) -> None:
        for name in ("n_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={shown(value)} is not valid; it must be an integer >= 1")
        if not isinstance(self.dtype, str) or self.dtype not in _DTYPES:
            raise ValueError(
                f"dtype={shown(self.dtype)} is not valid; accepted values: float32, float64"
            )
        device = str(self.device) if isinstance(self.device, torch.device) else self.device
        if not (isinstance(device, str) and (device == "cpu" or device.startswith("cuda"))):
            raise ValueError(f"device={shown(device)} is not valid; accepted values: cpu, cuda[:N]")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but no CUDA device is available")

    def _check_representable(self, X: np.ndarray, dtype: torch.dtype) -> None:
        """X (finite float64, from validate_data) must also be finite in the network's dtype:
        1e39 is a float64 but an infinity in float32, which would silently give NaN weights."""
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
        """Train for ``n_epochs`` epochs from a fresh network."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        self._check_loop_params()
        self._check_representable(X, _DTYPES[self.dtype])
        check_classification_targets(y)
        self._init_network(np.unique(y))
        for _ in range(self.n_epochs):
            self._run_epoch(X, y)
        return self

    def partial_fit(self, X, y, classes=None) -> DARNClassifier:  # type: ignore[no-untyped-def]
        """One epoch over (X, y); the first call needs ``classes`` (all labels ever seen)."""
        first = not hasattr(self, "network_")
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first)
        if first:
            self._check_loop_params()
        self._check_representable(X, _DTYPES[self.dtype] if first else self.network_.dtype)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            self._init_network(np.unique(np.asarray(classes)))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes).tolist()} differ from those of the first call "
                f"({self.classes_.tolist()})"
            )
        self._run_epoch(X, y)
        return self

    def _init_network(self, classes: np.ndarray) -> None:
        net_cfg, self._learning = self.network_config(), self.learning_config()
        check_compatible(net_cfg, self._learning)
        self._check_loop_params()
        if len(classes) < 2:
            raise ValueError(
                f"need samples of at least 2 classes to fit, got 1 class: {classes.tolist()}"
            )
        seed = self._seed()
        self._order_gen, self._dynamics_gen = seeded_generators(seed)
        self.classes_ = classes
        self.network_ = Network(
            net_cfg,
            self.n_features_in_,
            len(classes),
            seed=seed,
            device=self.device,
            dtype=_DTYPES[self.dtype],
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
        """An integer random_state is the seed itself, as ``train.seed`` is for ``darnn train``
        (same data, config and seed: same weights through either door)."""
        state = self.random_state
        if isinstance(state, (int, np.integer)) and not isinstance(state, (bool, np.bool_)):
            if not 0 <= state < 2**64:
                raise ValueError(
                    f"random_state={shown(state)} is not valid; an integer seed must lie in "
                    "[0, 2**64)"
                )
            return int(state)
        if state is not None and not isinstance(state, np.random.RandomState):
            raise ValueError(
                f"random_state={shown(state)} is not valid; give None, an integer seed or a "
                "numpy.random.RandomState"
            )
        rng = check_random_state(state)
        return int(rng.randint(np.iinfo(np.int32).max))

    def _run_epoch(self, X: np.ndarray, y: np.ndarray) -> None:
        net = self.network_
        xt = torch.tensor(X, dtype=net.dtype, device=net.device)
        yt = self._encode(y)
        order = torch.randperm(len(yt), generator=self._order_gen)
        counters, _ = fit_epoch(
            net,
            xt,
            yt,
            self._learning,
            self.batch_size,
            order,
            generator=self._dynamics_gen,
            threads=self.n_threads,
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
        """Readout fields (n, C) after the free relaxation; (n,) for two classes."""
        check_is_fitted(self, "network_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        net = self.network_
        self._check_representable(X, net.dtype)
        xt = torch.as_tensor(X, dtype=net.dtype)
        with using_threads(threads_for(net, min(len(xt), _EVAL_BATCH), self.n_threads)):
            scores = evaluate(net, xt, None, self.learning_config(), _EVAL_BATCH)["scores"]
        out = scores.cpu().numpy()  # type: ignore[union-attr]
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out

    def predict(self, X) -> np.ndarray:  # type: ignore[no-untyped-def]
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
