#!/usr/bin/env bash
# Builds deploy/docker/Dockerfile exactly as the README says, then checks the image: it runs as the
# documented uid, keeps its HEALTHCHECK, the health check passes against the bridge it starts by
# default, and the CLI inside it works on a dict in the container's /dev/shm. The container runs
# with --network none: nothing leaves it. Prints the image's size.
# Usage: image_test.sh [--binaries BUILD_DIR]
#   (needs root, podman; makes the Debian base image if it is missing)
# --binaries: the image's programs are BUILD_DIR's (a build of this checkout on this Debian 12
# host), stripped, instead of the Dockerfile's own Release build (the Dockerfile's `prebuilt`
# source): CI has just built and tested them, and building them again inside the image was
# minutes of its time. Everything after the binaries (the runtime stage, uid, HEALTHCHECK) is the
# same Dockerfile either way.
set -euo pipefail
cd "$(dirname "$0")/../.."
binaries=
if [ "${1:-}" = --binaries ]; then
  [ -n "${2:-}" ] || { echo "usage: $0 [--binaries BUILD_DIR]"; exit 2; }
  binaries=$2
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--binaries BUILD_DIR]"; exit 2
fi
image=localhost/shmdict:latest
container=shmdict-image-test
context=
fail() { echo "FAIL: $*"; podman logs "$container" 2>&1 | sed 's/^/  container: /' || true; exit 1; }
trap 'podman rm -f -t 0 "$container" >/dev/null 2>&1 || true; [ -z "$context" ] || rm -rf "$context"' EXIT

bash deploy/docker/make-base-image.sh
if [ -z "$binaries" ]; then
  # The README's command (section "Deploying"), word for word.
  podman build --format docker --pull=never --network host -f deploy/docker/Dockerfile -t shmdict:latest . \
    >/tmp/shmdict-image-build.log 2>&1 || { tail -30 /tmp/shmdict-image-build.log; fail "podman build"; }
else
  context=$(mktemp -d)
  for program in bridge/shmdict-bridge bridge/replica/shmdict-replica clients/cli/shmdict; do
    [ -x "$binaries/$program" ] || fail "$binaries/$program is not built"
    install -m 0755 -s "$binaries/$program" "$context/"
  done
  podman build --format docker --pull=never --network host -f deploy/docker/Dockerfile \
    --build-arg SHMDICT_BINARIES=prebuilt -t shmdict:latest "$context" \
    >/tmp/shmdict-image-build.log 2>&1 || { tail -30 /tmp/shmdict-image-build.log; fail "podman build"; }
fi

[ "$(podman image inspect "$image" --format '{{.Config.User}}')" = 10001:10001 ] \
  || fail "the image does not run as uid 10001 (README, deploy/kubernetes)"
health=$(podman image inspect "$image" --format '{{.Config.Healthcheck.Test}}')
[[ "$health" == *"shmdict --remote 127.0.0.1:7378 health"* ]] || fail "HEALTHCHECK lost: '$health'"

podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
podman run -d --name "$container" --network none "$image" >/dev/null 2>&1
# Nothing here runs health checks on a timer (no systemd): run them until one passes.
for _ in $(seq 100); do
  podman healthcheck run "$container" >/dev/null 2>&1 && break
  sleep 0.1
done
podman healthcheck run "$container" >/dev/null 2>&1 || fail "HEALTHCHECK does not pass"
# The node-replica overlay runs shmdict-replica from this image.
podman exec "$container" shmdict-replica --help >/dev/null 2>&1 \
  || fail "the image has no working shmdict-replica (deploy/kubernetes/overlays/node-replica)"
podman exec "$container" sh -c '
  set -e
  [ "$(id -u)" = 10001 ]
  shmdict create image-test >/dev/null
  shmdict set image-test key value
  [ "$(shmdict --remote 127.0.0.1:7377 get image-test key)" = value ]
  shmdict unlink image-test' || fail "the CLI and the bridge inside the image"
# A frozen bridge must fail the health check (the check is not always true). From the host: pid 1
# of a pid namespace ignores SIGSTOP from inside it.
bridge_pid=$(podman inspect "$container" --format '{{.State.Pid}}')
kill -STOP "$bridge_pid"
if podman healthcheck run "$container" >/dev/null 2>&1; then
  kill -CONT "$bridge_pid"
  fail "HEALTHCHECK passes with the bridge stopped"
fi
kill -CONT "$bridge_pid"
size=$(podman image inspect "$image" --format '{{.Size}}')
base=$(podman image inspect docker.io/library/debian:12-slim --format '{{.Size}}')
echo "PASS: image $image: $((size / 1000000)) MB ($(((size - base) / 1000000)) MB over its" \
  "debian:12-slim base), uid 10001, HEALTHCHECK passes and fails when it should"
