"""``darnn bench``: darnn recipes against same-parameter baselines on identical splits.

``methods`` reads a bench file (configs/bench/DATASET.yaml) into a validated plan,
``runner`` trains every method x seed, ``report`` writes table.md and the plots, ``cli``
is the argparse glue (registered by darnn.cli).
"""

from .cli import add_parser

__all__ = ["add_parser"]
