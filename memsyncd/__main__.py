"""``python -m memsyncd`` runs the ``memsyncd`` command."""

import sys

from memsyncd.main import main

sys.exit(main())
