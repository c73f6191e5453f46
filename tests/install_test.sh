#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, then builds and runs an outside project that
# uses find_package(shmdict CONFIG) and links shmdict::core (and shmdict::client, when built).
set -euo pipefail
build_dir=$1 source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/tests/install_consumer" -B "$work/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
if [ -x "$work/build/remote_consumer" ]; then
  "$work/build/remote_consumer"
  echo "shmdict::client found, linked and ran"
fi
echo "installed package found, linked and ran"
