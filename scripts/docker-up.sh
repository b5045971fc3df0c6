#!/usr/bin/env bash
# Bring up the local container engine that trainpod's docker tier and CI use.
#
# Why a script and not a fixture: CI (`.ci/run`, runs as root on a fresh Debian bookworm box) and the pytest
# fixture (tests/fixtures/docker_engine.py) must agree on one way to get an engine. Nothing can be pulled from a
# registry here, so the base image is bootstrapped with debootstrap and `docker import`ed once.
#
# Idempotent: every step checks first, so re-running it while everything is up is a fast no-op.
# Steps:
#   1. apt-get install docker.io docker-registry debootstrap (only the missing ones)
#   2. dockerd --bridge=none --iptables=false (no bridge networks; every build/container uses host networking)
#   3. trainpod/base:bookworm = debootstrap minbase bookworm + python3, python3-venv, ca-certificates
#   4. docker-registry (distribution) on 127.0.0.1:$TRAINPOD_ENGINE_REGISTRY_PORT (default 5055)
# Prints `DOCKER_HOST=... REGISTRY=... BASE_IMAGE=...` on its last line for callers to parse.
set -euo pipefail

STATE_DIR="${TRAINPOD_ENGINE_STATE:-/var/lib/trainpod-engine}"
SOCK="${TRAINPOD_ENGINE_SOCKET:-/var/run/docker.sock}"
REGISTRY_PORT="${TRAINPOD_ENGINE_REGISTRY_PORT:-5055}"
BASE_IMAGE="${TRAINPOD_ENGINE_BASE_IMAGE:-trainpod/base:bookworm}"
MIRROR="${TRAINPOD_ENGINE_MIRROR:-http://deb.debian.org/debian}"
export DOCKER_HOST="unix://${SOCK}"

log() { printf '[docker-up %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages and starts dockerd)"
mkdir -p "$STATE_DIR"

# Serialise concurrent callers (several pytest sessions may call this at once). The daemons started below
# close fd 9 so they do not hold the lock for their lifetime.
exec 9>"$STATE_DIR/lock"
flock 9

# --- 1. packages ------------------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d keeps the packages' init scripts from starting their own daemons: we start them below with
    # our flags (no bridge, no iptables, loopback-only registry).
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq >"$STATE_DIR/apt.log" 2>&1 || { cat "$STATE_DIR/apt.log" >&2; die "apt-get update failed"; }
    apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$STATE_DIR/apt.log" 2>&1 \
        || { tail -50 "$STATE_DIR/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
    rm -f /usr/sbin/policy-rc.d
fi
# Debian's docker.io puts its own client in /usr/bin; a newer one may already sit in /usr/local/bin. Either works.
command -v docker >/dev/null 2>&1 || die "no docker client after install"

# --- 2. dockerd -----------------------------------------------------------------------------------------------
engine_ok() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if ! engine_ok; then
    log "starting dockerd (log: $STATE_DIR/dockerd.log)"
    rm -f "$SOCK" /var/run/docker.pid
    # setsid: the daemon must outlive this script and the pytest process that may have started it.
    setsid nohup dockerd --host="unix://${SOCK}" --bridge=none --iptables=false --ip6tables=false \
        >"$STATE_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
    for _ in $(seq 1 120); do
        engine_ok && break
        sleep 0.5
    done
    engine_ok || { tail -40 "$STATE_DIR/dockerd.log" >&2; die "dockerd did not come up"; }
fi
log "engine up: $(docker version --format 'server {{.Server.Version}}, storage {{.Server.Os}}' 2>/dev/null)"

# --- 3. base image --------------------------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "bootstrapping $BASE_IMAGE with debootstrap (about a minute)"
    rootfs="$(mktemp -d "$STATE_DIR/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$STATE_DIR/debootstrap.log" 2>&1 \
        || { tail -40 "$STATE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    # Slim the rootfs the way official images do: no apt lists, docs, man pages or caches.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/tmp/*
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi
log "base image $BASE_IMAGE present"

# --- 4. loopback registry ---------------------------------------------------------------------------------
registry_ok() { curl -fsS -m 3 "http://127.0.0.1:${REGISTRY_PORT}/v2/" >/dev/null 2>&1; }
if ! registry_ok; then
    log "starting docker-registry on 127.0.0.1:${REGISTRY_PORT}"
    mkdir -p "$STATE_DIR/registry"
    cat >"$STATE_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${REGISTRY_PORT}
EOF
    setsid nohup docker-registry serve "$STATE_DIR/registry.yml" >"$STATE_DIR/registry.log" 2>&1 </dev/null 9>&- &
    for _ in $(seq 1 40); do
        registry_ok && break
        sleep 0.25
    done
    registry_ok || { tail -20 "$STATE_DIR/registry.log" >&2; die "registry did not come up"; }
fi
log "registry up on 127.0.0.1:${REGISTRY_PORT}"

echo "DOCKER_HOST=${DOCKER_HOST} REGISTRY=127.0.0.1:${REGISTRY_PORT} BASE_IMAGE=${BASE_IMAGE}"
