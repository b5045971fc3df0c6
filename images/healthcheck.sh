#!/bin/sh
# HEALTHCHECK: the trainer rewrites status.json in its output dir as it makes progress. A file older than
# TRAINPOD_HEALTH_MAX_AGE seconds (default 900) means a hung run. No file yet: still starting (start-period).
f="${TRAINPOD_OUTPUT_DIR:-/output}/status.json"
[ -f "$f" ] || exit 0
age=$(( $(date +%s) - $(stat -c %Y "$f") ))
[ "$age" -le "${TRAINPOD_HEALTH_MAX_AGE:-900}" ]
