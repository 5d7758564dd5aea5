"""``python -m shmenv`` runs the ``shmenv`` command."""

from shmenv.cli import main

raise SystemExit(main())
