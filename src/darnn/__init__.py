"""darnn: dynamical learning in deep asymmetric recurrent networks (arXiv:2509.05041)."""

import importlib.metadata

from .config import LearningConfig, NetworkConfig
from .dynamics import Relaxation, is_fixed_point, relax, spin_sign
from .learning import StepStats, evaluate, learning_step, local_rule, predict_scores, two_phase
from .network import Network, Recurrent

__version__ = importlib.metadata.version("darnn")  # one source: pyproject.toml


def __getattr__(name: str) -> object:
    # The estimator pulls in scikit-learn (~1-3 s); the CLI and the theory lab don't need it.
    if name == "DARNClassifier":
        from .estimator import DARNClassifier

        return DARNClassifier
    raise AttributeError(f"module 'darnn' has no attribute {name!r}")


__all__ = [
    "DARNClassifier",
    "LearningConfig",
    "Network",
    "NetworkConfig",
    "Recurrent",
    "Relaxation",
    "StepStats",
    "__version__",
    "evaluate",
    "is_fixed_point",
    "learning_step",
    "local_rule",
    "predict_scores",
    "relax",
    "spin_sign",
    "two_phase",
]
