#!/usr/bin/env bash
# deploy/systemd/shmdict-replica@.service, checked offline: systemd-analyze verifies an instance of
# the template (no unknown key, an executable ExecStart), and the unit keeps what a replica needs
# from systemd: the dict's shared memory survives a stop (RemoveIPC=no, no DynamicUser, the real
# /dev/shm), the instance names the dict, and its upstream comes from the per-dict environment file.
# Usage: systemd_replica_test.sh [SHMDICT_REPLICA]
#   SHMDICT_REPLICA: the built binary, put in ExecStart for the verification. Without it (a build
#   without bridge/replica) /bin/true stands in, and only the unit itself is checked.
set -euo pipefail
units=$(realpath "$(dirname "$0")/../../deploy/systemd")
replica=${1:-}
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze missing (Debian package systemd)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
unit="$tmp/shmdict-replica@.service"
cp "$units/shmdict-replica@.service" "$unit"

# 1. The unit's own settings.
grep -qx 'RemoveIPC=no' "$unit" || fail "the service must say RemoveIPC=no"
if grep -Eq '^(DynamicUser=yes|PrivateDevices=yes|RemoveIPC=yes|PrivateIPC=yes)' "$unit"; then
  fail "the service would hide or delete the dicts"
fi
grep -qx 'ReadWritePaths=/dev/shm' "$unit" || fail "ProtectSystem=strict without /dev/shm writable"
grep -qx 'EnvironmentFile=/etc/shmdict/replica-%i.env' "$unit" \
  || fail "the upstream must come from /etc/shmdict/replica-%i.env"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$(grep -c '^ExecStart=' "$unit")" = 1 ] || fail "expected one ExecStart"
read -r -a words <<<"$exec_start"
[ "${words[0]}" = /usr/local/bin/shmdict-replica ] || fail "ExecStart runs ${words[0]}"
[ "${words[1]} ${words[2]}" = "--dict %i" ] || fail "the instance must be the dict: $exec_start"
# Unbraced and a word of its own: systemd splits it into one word per flag (braced, it would be
# one argument "--etcd A --prefix P ...", which no flag parser takes).
[[ " ${words[*]} " == *' $SHMDICT_REPLICA_ARGS '* ]] || fail "ExecStart must pass \$SHMDICT_REPLICA_ARGS"

# 2. systemd-analyze verify of an instance (the template alone is not a unit it can load).
if [ -n "$replica" ]; then
  stand_in=$(realpath "$replica")
else
  stand_in=/bin/true
  echo "note: no shmdict-replica given: /bin/true stands in for ExecStart's binary"
fi
sed -i "s|^ExecStart=/usr/local/bin/shmdict-replica|ExecStart=$stand_in|" "$unit"
if ! verify=$(systemd-analyze verify "$tmp/shmdict-replica@orders.service" 2>&1) || [ -n "$verify" ]; then
  fail "systemd-analyze verify: $verify"
fi
echo "PASS: shmdict-replica@.service verifies and keeps the dict's shared memory"
