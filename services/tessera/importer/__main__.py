import sys

from tessera.importer.cli import main

sys.exit(main())
