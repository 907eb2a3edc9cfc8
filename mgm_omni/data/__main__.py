"""``python -m mgm_omni.data build|stats ...``."""

import sys

from .cli import main

sys.exit(main())
