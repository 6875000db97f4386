"""``python -m tessera.local`` is the ``tessera`` command."""

from tessera.local.cli import main

raise SystemExit(main())
