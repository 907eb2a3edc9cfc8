import sys

from mgm_omni.cli import main

sys.exit(main())
