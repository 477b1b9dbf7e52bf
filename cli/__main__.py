"""``python -m cli``: the ``modelexport`` command."""

import sys

from . import main

sys.exit(main())
