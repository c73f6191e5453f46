#!/usr/bin/env bash
# deploy/systemd, run as systemd would run it: systemd-analyze checks both units, then the
# service's own ExecStart (its flags, with a short --idle-exit) is started by
# systemd-socket-activate on the socket unit's listeners (moved to a temporary socket and a free
# loopback port). The first connection starts the bridge and is served, the bridge exits when
# idle, the dict outlives it, and a second activation serves again.
# Usage: systemd_test.sh SHMDICT_BRIDGE SHMDICT_CLI
set -euo pipefail
bridge=$(realpath "$1")
cli=$(realpath "$2")
units=$(realpath "$(dirname "$0")/../../deploy/systemd")
activate=/usr/bin/systemd-socket-activate
if [ ! -x "$activate" ] || ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-socket-activate / systemd-analyze missing (Debian package systemd)"
  exit 77
fi
tmp=$(mktemp -d)
dict="systemd-test-$$"
activator=
cleanup() {
  [ -n "$activator" ] && kill "$activator" 2>/dev/null && wait "$activator" 2>/dev/null
  "$cli" unlink "$dict" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/log" ] && sed 's/^/  bridge: /' "$tmp/log"; exit 1; }

# 1. Both units parse, with no unknown key (systemd-analyze only warns about those) and an
#    executable ExecStart.
cp "$units"/shmdict-bridge.socket "$units"/shmdict-bridge.service "$tmp/"
sed -i "s|^ExecStart=/usr/local/bin/shmdict-bridge|ExecStart=$bridge|" "$tmp/shmdict-bridge.service"
if ! verify=$(systemd-analyze verify "$tmp/shmdict-bridge.socket" "$tmp/shmdict-bridge.service" 2>&1) \
  || [ -n "$verify" ]; then
  fail "systemd-analyze verify: $verify"
fi
grep -qx 'RemoveIPC=no' "$tmp/shmdict-bridge.service" || fail "the service must say RemoveIPC=no"
if grep -Eq '^(DynamicUser=yes|PrivateDevices=yes|RemoveIPC=yes)' "$tmp/shmdict-bridge.service"; then
  fail "the service would hide or delete the dicts"
fi

# 2. The units' own listeners and flags, relocated: the Unix socket into $tmp, the TCP port to a
#    free one; --idle-exit shortened; --exit-with-parent so a killed test leaves no bridge.
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
listen_args=()
while read -r address; do
  case "$address" in
    /*) listen_args+=(-l "$tmp/bridge.sock") ;;
    127.0.0.1:*) listen_args+=(-l "127.0.0.1:$port") ;;
    *) fail "unexpected ListenStream=$address" ;;
  esac
done < <(sed -n 's/^ListenStream=//p' "$units/shmdict-bridge.socket")
read -r -a exec_start < <(sed -n 's/^ExecStart=//p' "$tmp/shmdict-bridge.service")
bridge_args=("${exec_start[@]:1}")
for i in "${!bridge_args[@]}"; do
  [ "${bridge_args[$i]}" = --idle-exit ] && bridge_args[$((i + 1))]=2
done
[[ " ${bridge_args[*]} " == *" --idle-exit 2 "* ]] || fail "ExecStart has no --idle-exit"
export SHMDICT_BRIDGE_REGISTRY_DIR="$tmp/registry"

activate_once() {
  # systemd-socket-activate starts its program with a clean environment, as systemd does.
  "$activate" "${listen_args[@]}" -E SHMDICT_BRIDGE_REGISTRY_DIR \
    "${exec_start[0]}" "${bridge_args[@]}" --exit-with-parent >"$tmp/log" 2>&1 &
  activator=$!
  for _ in $(seq 300); do [ -S "$tmp/bridge.sock" ] && return; sleep 0.05; done
  fail "no listening socket"
}
wait_for_idle_exit() {
  for _ in $(seq 600); do
    if ! kill -0 "$activator" 2>/dev/null; then
      wait "$activator" || fail "the bridge's idle exit was not clean (status $?)"
      activator=
      return
    fi
    sleep 0.05
  done
  fail "the bridge did not exit when idle"
}

"$cli" create "$dict" >/dev/null
activate_once
[ "$(readlink "/proc/$activator/exe")" = "$activate" ] || fail "the bridge started before any connection"
"$cli" --remote "unix:$tmp/bridge.sock" set "$dict" first 1 || fail "first connection not served"
[ "$(readlink "/proc/$activator/exe")" = "$bridge" ] || fail "no bridge after the first connection"
[ "$("$cli" --remote "127.0.0.1:$port" get "$dict" first)" = 1 ] || fail "TCP listener not served"
wait_for_idle_exit
[ "$("$cli" get "$dict" first)" = 1 ] || fail "the dict did not outlive the bridge"
rm -f "$tmp/bridge.sock"

activate_once
"$cli" --remote "127.0.0.1:$port" set "$dict" second 2 || fail "second activation not served"
[ "$("$cli" --remote "unix:$tmp/bridge.sock" get "$dict" first)" = 1 ] || fail "first write lost"
wait_for_idle_exit
[ "$("$cli" get "$dict" second)" = 2 ] || fail "second write lost"
echo "PASS: activated twice, served on both listeners, idle exit kept the dict"
