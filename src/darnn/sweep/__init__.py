"""Hyperparameter sweeps on Optuna: ``darnn sweep`` and ``darnn sweep summary``.

``space`` reads and checks a SPACE.yaml, ``storage`` opens Optuna's database, ``study``
checks a sweep and creates its study, ``objective`` trains one trial, ``workers`` run the
trials, ``summary`` prints the best trials and draws plots, ``cli`` is the argparse glue.
Optuna is imported only when a sweep runs, so ``darnn`` works without the ``sweep`` extra.
"""

from .cli import add_subcommands

__all__ = ["add_subcommands"]
