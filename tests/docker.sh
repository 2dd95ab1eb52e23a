#!/usr/bin/env bash
# A private Docker Engine for the container tests: sourced by tests/run.sh.
#   start_docker   installs docker.io and busybox-static when missing, starts dockerd on its
#                  own socket and data folder (no bridge, no iptables: test containers use
#                  network `none`), imports the test image from a busybox root filesystem
#                  (no registry is reachable), and exports DOCKER_HOST.
#   stop_docker    stops that dockerd by its pid file.

SLUICE_DOCKER_ROOT="${SLUICE_DOCKER_ROOT:-/tmp/sluice-docker}"
SLUICE_TEST_IMAGE="sluice-test/busybox:1"

start_docker() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1; then
    echo "tests/docker.sh: installing docker.io and busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io busybox-static >/dev/null
  fi
  mkdir -p "$SLUICE_DOCKER_ROOT"
  local sock="$SLUICE_DOCKER_ROOT/docker.sock"
  export DOCKER_HOST="unix://$sock"
  if [ -f "$SLUICE_DOCKER_ROOT/dockerd.pid" ] && kill -0 "$(cat "$SLUICE_DOCKER_ROOT/dockerd.pid")" 2>/dev/null; then
    stop_docker
  fi
  dockerd --host "$DOCKER_HOST" --data-root "$SLUICE_DOCKER_ROOT/data" \
    --exec-root "$SLUICE_DOCKER_ROOT/exec" --pidfile "$SLUICE_DOCKER_ROOT/dockerd.pid" \
    --bridge=none --iptables=false --ip-masq=false >"$SLUICE_DOCKER_ROOT/dockerd.log" 2>&1 &
  local i
  for i in $(seq 1 150); do
    docker version >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! docker version >/dev/null 2>&1; then
    echo "tests/docker.sh: dockerd did not start; its log:" >&2
    tail -20 "$SLUICE_DOCKER_ROOT/dockerd.log" >&2
    return 1
  fi
  if ! docker image inspect "$SLUICE_TEST_IMAGE" >/dev/null 2>&1; then
    local rootfs="$SLUICE_DOCKER_ROOT/rootfs"
    rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/tmp"
    cp "$(command -v busybox)" "$rootfs/bin/busybox"
    local c
    for c in sh true false echo cat ls wc sleep env printf test mkdir rm cp head tail tr seq date kill; do
      ln -sf busybox "$rootfs/bin/$c"
    done
    tar -C "$rootfs" -cf "$SLUICE_DOCKER_ROOT/busybox.tar" .
    docker import "$SLUICE_DOCKER_ROOT/busybox.tar" "$SLUICE_TEST_IMAGE" >/dev/null
  fi
  echo "tests/docker.sh: dockerd $(docker version --format '{{.Server.Version}}') on $DOCKER_HOST with $SLUICE_TEST_IMAGE"
}

stop_docker() {
  local pidfile="$SLUICE_DOCKER_ROOT/dockerd.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}
