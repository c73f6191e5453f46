#!/usr/bin/env bash
# The Kubernetes sidecar pod, run for real: `podman kube play` of deploy/kubernetes/overlays/podman
# (the base made runnable by podman 4.3), with the image deploy/docker/Dockerfile built.
#   - the app container writes through the pod's shared /dev/shm;
#   - a client container outside the pod, with a /dev/shm of its own, watches and writes the same
#     dict through the bridge's loopback port (host network: ENVIRONMENT.md, "Addresses");
#   - the bridge's process is SIGKILLed mid-run, as a crash or OOM kill would, and the pod's
#     restartPolicy brings it back, as the kubelet would;
#   - at the end both sides hold the same entries, every acknowledged write is there, and the
#     watcher saw every one of them in increasing revisions.
# Everything (pod, client, volume) is removed afterwards, also on failure.
# Usage: pod_test.sh   (from anywhere; needs podman, kubectl and the image localhost/shmdict:latest)
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in podman kubectl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (.ci/install-deps, ENVIRONMENT.md)"; exit 1; }
done
podman image exists localhost/shmdict:latest || { echo "FAIL: build the image first (tests/deploy/image_test.sh)"; exit 1; }

writes=${SHMDICT_POD_WRITES:-150}  # per side
pod=shmdict-example-pod-0          # kube play names a Deployment's pod NAME-pod-0
client=shmdict-pod-test-client
remote=127.0.0.1:17377             # the podman overlay's --listen
tmp=$(mktemp -d)
manifest="$tmp/pod.yaml"
kubectl kustomize deploy/kubernetes/overlays/podman >"$manifest"

remove_pod() {  # the pod, the client and the volume; also leftovers of an interrupted run
  podman rm -f -t 0 "$client" >/dev/null 2>&1 || true
  podman kube down "$manifest" >/dev/null 2>&1 || true
  podman pod rm -f -t 0 "$pod" >/dev/null 2>&1 || true
  podman volume rm -f dshm >/dev/null 2>&1 || true
}
cleanup() {
  local pids
  pids=$(jobs -p)
  [ -n "$pids" ] && kill $pids 2>/dev/null
  wait 2>/dev/null
  remove_pod
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for c in "$pod-app" "$pod-bridge" "$client"; do
    podman logs --tail 20 "$c" 2>&1 | sed "s/^/  $c: /" || true
  done
  exit 1
}
remove_pod

# kube play would make the emptyDir a root-owned 0755 directory volume, which uid 10001 cannot
# write (fsGroup is ignored). A tmpfs volume of that name, owned by the dicts' uid, is what
# `medium: Memory` gives in a cluster; kube play uses the existing volume.
podman volume create --opt type=tmpfs --opt device=tmpfs --opt o=uid=10001,gid=10001,mode=1770 \
  dshm >/dev/null
podman kube play --network host "$manifest" >"$tmp/play.log" 2>&1 || fail "kube play: $(cat "$tmp/play.log")"
podman pod exists "$pod" || fail "kube play made no pod: $(cat "$tmp/play.log")"

in_app() { podman exec "$pod-app" "$@"; }
in_client() { podman exec "$client" "$@"; }
until_ok() {  # until_ok SECONDS WHAT 'COMMAND': re-evaluates COMMAND; SECONDS is the hang guard
  local deadline=$((SECONDS + $1)) what=$2 command=$3
  until eval "$command" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what"
    sleep 0.2
  done
}
until_ok 60 "the bridge never reported SERVING" \
  'podman exec "$pod-bridge" shmdict --remote 127.0.0.1:17378 health'
until_ok 60 "the app never created the dict" 'in_app shmdict get example app-heartbeat'

# The client: the same image, outside the pod, its own private /dev/shm.
podman run -d --name "$client" --network host --entrypoint sleep localhost/shmdict:latest infinity \
  >/dev/null 2>&1
[ -z "$(in_client ls /dev/shm)" ] || fail "the client container sees a /dev/shm with files"
in_client shmdict get example app-heartbeat >/dev/null 2>&1 && fail "the client maps the dict itself"
until_ok 30 "the client cannot reach the bridge" 'in_client shmdict --remote "$remote" get example ticks'

# A watcher from revision 0 through the bridge; it resumes by itself when the bridge comes back.
podman exec "$client" shmdict --remote "$remote" watch example --from 0 >"$tmp/watch" 2>"$tmp/watch.err" &

# Writers on both sides. A write counts only once its command said so; a remote write that fails
# (the bridge is down) is retried, and writing the same value again is harmless.
podman exec "$pod-app" sh -c "for i in \$(seq $writes); do
    shmdict set example app-\$i a\$i || exit 1; echo \$i; sleep 0.02; done" >"$tmp/app.acked" &
app_writer=$!
podman exec "$client" sh -c "for i in \$(seq $writes); do
    until shmdict --remote $remote set example remote-\$i r\$i 2>/dev/null; do sleep 0.1; done
    echo \$i; done" >"$tmp/remote.acked" &
remote_writer=$!

# Kill the bridge mid-run, from outside, as the kernel's OOM killer or a crash would.
until_ok 60 "no remote write went through" '[ "$(wc -l <"$tmp/remote.acked")" -ge $((writes / 3)) ]'
bridge_pid=$(podman inspect "$pod-bridge" --format '{{.State.Pid}}')
# shellcheck disable=SC2034  # read by the until_ok condition below
restarts_before=$(podman inspect "$pod-bridge" --format '{{.RestartCount}}')
kill -KILL "$bridge_pid"
killed_at=$(wc -l <"$tmp/remote.acked")
until_ok 60 "the pod did not restart the bridge" \
  '[ "$(podman inspect "$pod-bridge" --format "{{.RestartCount}}")" -gt "$restarts_before" ]'
until_ok 60 "the restarted bridge never reported SERVING" \
  'podman exec "$pod-bridge" shmdict --remote 127.0.0.1:17378 health'

wait "$app_writer" || fail "the app's shared-memory writes failed"
wait "$remote_writer" || fail "the client's remote writes failed"
[ "$(wc -l <"$tmp/app.acked")" -eq "$writes" ] || fail "app writes missing"
[ "$(wc -l <"$tmp/remote.acked")" -eq "$writes" ] || fail "remote writes missing"

# The watcher must reach a last write made after everything else.
in_client shmdict --remote "$remote" set example sentinel "done" >/dev/null
until_ok 60 "the watcher never saw the last write" 'grep -q "$(printf "\tset\tsentinel\tdone")\$" "$tmp/watch"'
kill %1 2>/dev/null || true

# Both sides, same entries. The app's heartbeat loop keeps writing 'ticks' and 'app-heartbeat'
# between the two reads, so those two keys are left out of the comparison.
in_app shmdict export example | grep -v '"key":"\(ticks\|app-heartbeat\)"' | sort >"$tmp/via-shm"
in_client shmdict --remote "$remote" export example | grep -v '"key":"\(ticks\|app-heartbeat\)"' \
  | sort >"$tmp/via-bridge"
cmp -s "$tmp/via-shm" "$tmp/via-bridge" || fail "the two sides differ: $(diff "$tmp/via-shm" "$tmp/via-bridge" | head)"

# Every acknowledged write, with its value; and in the watch stream, in increasing revisions.
missing=0
for side in app remote; do
  value_prefix=${side:0:1}
  while read -r i; do
    grep -q "\"key\":\"$side-$i\".*\"value\":\"$value_prefix$i\"" "$tmp/via-shm" || missing=$((missing + 1))
    grep -q $'\tset\t'"$side-$i"$'\t'"$value_prefix$i"'$' "$tmp/watch" || missing=$((missing + 1))
  done <"$tmp/$side.acked"
done
[ "$missing" -eq 0 ] || fail "$missing acknowledged writes missing from the dict or the watch stream"
awk -F'\t' '$2 != "snapshot" { if ($1 + 0 <= last) bad = 1; last = $1 + 0 } END { exit bad }' \
  "$tmp/watch" || fail "the watch stream's revisions do not increase"

entries=$(wc -l <"$tmp/via-shm")
restarts=$(podman inspect "$pod-bridge" --format '{{.RestartCount}}')
echo "PASS: pod $pod: $writes writes through shared memory (app) and $writes through the bridge" \
  "(client container); bridge SIGKILLed after $killed_at remote writes, restarted by the pod" \
  "($restarts restart(s)); both sides hold the same $entries entries; the watcher saw" \
  "$(grep -c $'\tset\t' "$tmp/watch") sets in increasing revisions"
