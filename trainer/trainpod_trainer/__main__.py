"""``python -m trainpod_trainer [--spec FILE]``: see :mod:`trainpod_trainer.run`."""

import sys

from trainpod_trainer.run import main

sys.exit(main())
