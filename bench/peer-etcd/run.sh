#!/usr/bin/env bash
# The etcd peer benchmark: installs etcd and protoc when missing, builds the
# load generator (release, its own target dir) and runs it. Arguments go to
# the `peer-etcd` binary, e.g. `bench/peer-etcd/run.sh --seconds 3 --json`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# etcd-client's protos import protobuf's well-known types (descriptor.proto),
# which Debian ships in libprotobuf-dev (only a Recommends of protoc).
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || missing+=(libprotobuf-dev)
if ((${#missing[@]} > 0)); then
    echo "peer-etcd: installing ${missing[*]}" >&2
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev
fi

# The machine is small and shared: two build jobs at most.
cd "$here"
cargo build --release --quiet -j "${PEER_ETCD_BUILD_JOBS:-2}" --target-dir "$here/target"
exec "$here/target/release/peer-etcd" "$@"
