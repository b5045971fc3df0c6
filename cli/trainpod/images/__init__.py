"""Image plans: which Dockerfile, which build args, which files, which content-addressed tag; build and push.

Why content addressing: the tag is ``<registry>/<repository>:<flavor>-<hash12>`` where the hash covers the
Dockerfile, the dependency lock, every source file and every build arg. So ``build`` is a no-op when nothing
changed (the tag already exists), ``push`` is skipped when the registry already has the tag, and a RunSpec that
names an image names exactly the code it runs.

Why trainpod assembles the build context itself (instead of ``docker build .``): the context must be small and
deterministic — only pyproject, ``cli/``, ``trainer/``, ``profiles/`` and the lock, in sorted order with fixed
mtimes and owners — so the same tree always hashes and caches the same, wherever it is checked out.

Build-time helpers (an extra CA bundle for TLS-intercepting proxies, a local wheelhouse for air-gapped hosts)
go into the context under ``build/`` and are used only by the builder stage; the final stage copies the
virtualenv, so they never reach the image. They do not enter the tag either: they change how the image is
fetched, not what it contains.

:func:`image_plan` is pure (reads files, never talks to an engine); :func:`build` and :func:`push` use the
docker SDK, imported lazily so ``trainpod --help`` stays light."""

from __future__ import annotations

from trainpod.images.context import (
    write_context as write_context,
)
from trainpod.images.engine import (
    HARDWARE_LABEL as HARDWARE_LABEL,
)
from trainpod.images.engine import (
    build as build,
)
from trainpod.images.engine import (
    build_and_push as build_and_push,
)
from trainpod.images.engine import (
    build_project as build_project,
)
from trainpod.images.engine import (
    docker_client as docker_client,
)
from trainpod.images.engine import (
    image_exists as image_exists,
)
from trainpod.images.engine import (
    prune as prune,
)
from trainpod.images.engine import (
    push as push,
)
from trainpod.images.engine import (
    registry_has as registry_has,
)
from trainpod.images.engine import (
    resolve_hardware as resolve_hardware,
)
from trainpod.images.fetch import (
    PipSources as PipSources,
)
from trainpod.images.fetch import (
    pip_config as pip_config,
)
from trainpod.images.fetch import (
    pip_sources as pip_sources,
)
from trainpod.images.fetch import (
    resolve_wheelhouse as resolve_wheelhouse,
)
from trainpod.images.layout import (
    CUDA_EXTRAS as CUDA_EXTRAS,
)
from trainpod.images.layout import (
    CUDA_LOCK_FILE as CUDA_LOCK_FILE,
)
from trainpod.images.layout import (
    DEFAULT_BASE as DEFAULT_BASE,
)
from trainpod.images.layout import (
    DEFAULT_CPU_BASE as DEFAULT_CPU_BASE,
)
from trainpod.images.layout import (
    FIXED_MTIME as FIXED_MTIME,
)
from trainpod.images.layout import (
    IMAGE_EXTRAS as IMAGE_EXTRAS,
)
from trainpod.images.layout import (
    IMAGES_DIR as IMAGES_DIR,
)
from trainpod.images.layout import (
    LOCK_FILE as LOCK_FILE,
)
from trainpod.images.layout import (
    REPO_ROOT as REPO_ROOT,
)
from trainpod.images.layout import (
    SOURCE_ROOTS as SOURCE_ROOTS,
)
from trainpod.images.lock import (
    derive_cuda_lock as derive_cuda_lock,
)
from trainpod.images.lock import (
    derive_lock as derive_lock,
)
from trainpod.images.lock import (
    torch_version as torch_version,
)
from trainpod.images.plan import (
    CONTENT_LABEL as CONTENT_LABEL,
)
from trainpod.images.plan import (
    ImagePlan as ImagePlan,
)
from trainpod.images.plan import (
    context_hashes as context_hashes,
)
from trainpod.images.plan import (
    copy_source_tree as copy_source_tree,
)
from trainpod.images.plan import (
    hardware_env_arg as hardware_env_arg,
)
from trainpod.images.plan import (
    image_plan as image_plan,
)
from trainpod.images.project import (
    PROJECT_CONTENT_LABEL as PROJECT_CONTENT_LABEL,
)
from trainpod.images.project import (
    PROJECT_DOCKERFILE as PROJECT_DOCKERFILE,
)
from trainpod.images.project import (
    ProjectImagePlan as ProjectImagePlan,
)
from trainpod.images.project import (
    project_files as project_files,
)
from trainpod.images.project import (
    project_image_plan as project_image_plan,
)
from trainpod.images.project import (
    write_project_context as write_project_context,
)
