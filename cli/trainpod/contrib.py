"""``from trainpod import contrib`` keeps working in your projects: the helper lives in :mod:`trainpod.pod.contrib`."""

from trainpod.pod.contrib import *  # noqa: F403
from trainpod.pod.contrib import __all__  # noqa: F401
