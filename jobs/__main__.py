"""``python -m jobs`` runs the batchscore command line."""

import sys

from jobs.cli import main

sys.exit(main())
