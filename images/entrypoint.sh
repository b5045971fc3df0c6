#!/bin/sh
# trainpod container entrypoint. It `exec`s, so the trainer becomes PID 1 and receives SIGTERM directly from
# `docker stop` / RunPod (SIGTERM means "checkpoint now, then exit"); no shell stays in between to swallow it.
set -eu
# Options alone (`docker run IMAGE --spec /x.json`) are passed to the default trainer command.
case "${1:-}" in
    -*) set -- python -m trainpod_trainer "$@" ;;
esac
exec "$@"
