"""``python -m shmenv`` runs the ``shmenv`` command."""

import sys

from shmenv.cli import main

sys.exit(main())
