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
#   3. trainpod/base:bookworm = debootstrap minbase bookworm + python3, python3-venv, ca-certificates, from
#      TRAINPOD_ENGINE_MIRROR or else the bookworm mirror in this machine's apt sources (`--print-mirror` shows it)
#   4. docker-registry (distribution) on 127.0.0.1:$TRAINPOD_ENGINE_REGISTRY_PORT (default 5055)
# Prints `DOCKER_HOST=... REGISTRY=... BASE_IMAGE=...` on its last line for callers to parse.
set -euo pipefail

STATE_DIR="${TRAINPOD_ENGINE_STATE:-/var/lib/trainpod-engine}"
SOCK="${TRAINPOD_ENGINE_SOCKET:-/var/run/docker.sock}"
REGISTRY_PORT="${TRAINPOD_ENGINE_REGISTRY_PORT:-5055}"
BASE_IMAGE="${TRAINPOD_ENGINE_BASE_IMAGE:-trainpod/base:bookworm}"
# apt's configuration directory, read for the Debian mirror (override only to point at another tree)
APT_DIR="${TRAINPOD_ENGINE_APT_DIR:-/etc/apt}"
export DOCKER_HOST="unix://${SOCK}"

log() { printf '[docker-up %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The Debian mirror debootstrap fetches bookworm from: TRAINPOD_ENGINE_MIRROR, else the first enabled `deb`
# source for suite `bookworm` in this machine's apt configuration (one-line sources.list / *.list files and
# deb822 *.sources files, in apt's order), so the engine works behind a corporate mirror. No public host is
# assumed: with neither, this fails and says what to set.
apt_mirror() {
    local f
    for f in "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*; do
        [ -f "$f" ] || continue
        case "$f" in
            *.list)
                awk '$1 == "deb" {
                        i = 2
                        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                        if ($(i + 1) == "bookworm" && $i ~ /^(https?|ftp|file):/) { print $i; exit }
                     }' "$f" ;;
            *.sources)
                awk 'BEGIN { RS = "" }
                     {
                        types = ""; uris = ""; suites = ""; enabled = "yes"; key = ""
                        n = split($0, lines, "\n")
                        for (j = 1; j <= n; j++) {
                            line = lines[j]
                            if (line ~ /^#/) continue
                            if (match(line, /^[A-Za-z][A-Za-z0-9-]*:/)) {
                                key = tolower(substr(line, 1, RLENGTH - 1)); val = substr(line, RLENGTH + 1)
                            } else if (line ~ /^[ \t]/) { val = line } else continue
                            if (key == "types") types = types " " val
                            else if (key == "uris") uris = uris " " val
                            else if (key == "suites") suites = suites " " val
                            else if (key == "enabled") enabled = val
                        }
                        if (tolower(enabled) ~ /no/ || (types " ") !~ / deb[ \t]/ || (suites " ") !~ /[ \t]bookworm[ \t]/) next
                        m = split(uris, u, /[ \t]+/)
                        for (k = 1; k <= m; k++) if (u[k] ~ /^(https?|ftp|file):/) { print u[k]; exit }
                     }' "$f" ;;
        esac
    done | head -n 1
}
debian_mirror() {
    local m="${TRAINPOD_ENGINE_MIRROR:-$(apt_mirror)}"
    [ -n "$m" ] || die "no Debian mirror for debootstrap: $APT_DIR/sources.list and $APT_DIR/sources.list.d/ hold no enabled 'deb' source for bookworm; set TRAINPOD_ENGINE_MIRROR to your Debian mirror's URL (the directory that holds dists/bookworm)"
    echo "$m"
}
if [ "${1:-}" = "--print-mirror" ]; then  # what step 3 would use, without root or changes
    debian_mirror
    exit 0
fi

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
    MIRROR="$(debian_mirror)" || exit 1
    log "bootstrapping $BASE_IMAGE with debootstrap from $MIRROR (about a minute)"
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
