#!/bin/sh
# trainpod container entrypoint. It `exec`s, so the trainer becomes PID 1 and receives SIGTERM directly from
# `docker stop` / RunPod (SIGTERM means "checkpoint now, then exit"); no shell stays in between to swallow it.
set -eu
# Hardware environment baked into CUDA images (NCCL settings for consumer cards); variables already set win.
if [ -r /etc/trainpod/hardware.env ]; then
    while IFS= read -r line; do
        kv="${line#export }"
        name="${kv%%=*}"
        eval "current=\${${name}:-}"
        # shellcheck disable=SC2154  # current is assigned by the eval above
        [ -n "$current" ] || export "${kv?}"
    done < /etc/trainpod/hardware.env
fi
# Options alone (`docker run IMAGE --spec /x.json`) are passed to the default trainer command.
case "${1:-}" in
    -*) set -- python -m trainpod_trainer "$@" ;;
esac
exec "$@"
