import sys

from jobs.bench.cli import main

sys.exit(main())
