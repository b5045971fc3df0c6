"""``python -m trainpod.images lock``: regenerate images/requirements.lock."""

import sys

from trainpod.images.lock import main

raise SystemExit(main(sys.argv[1:]))
