import sys

from fastagi_dev.cli import main

sys.exit(main())
