import sys

from eflow_core.cli import main

sys.exit(main())
