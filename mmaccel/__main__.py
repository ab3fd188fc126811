"""``python -m mmaccel``: what torchrun and accelerate launch start with ``-m mmaccel``."""

import sys

from .cli import main

sys.exit(main())
