"""`python -m pivotal_sae ...`: the console script, for launchers that take a module
(`torchrun -m pivotal_sae absorb ...`)."""

import sys

from pivotal_sae.cli import main

sys.exit(main())
