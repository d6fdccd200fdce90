"""Entry point of ``python -m memsyncd.emulators`` (same as ``memsyncd emulate``)."""

import sys

from memsyncd.emulators.runner import emulate_main

raise SystemExit(emulate_main(sys.argv[1:]))
