"""``python -m effnet_tutorial ...``: see :mod:`effnet_tutorial.cli`."""
import sys

from .cli import main

sys.exit(main())
