#!/usr/bin/env bash
# The time for a Tern user to join a room another Tern server holds whose
# state has 1,000 members (issue 18): two Tern servers on loopback,
# federating over TLS with self-signed certificates; tern-bench
# (--mode remote-join) fills rooms on the second and joins each from the
# first, a first join of that server each time, then times the joiner's
# first /sync.
#
#   bench/federation/join.sh                 # 1,000 members, 3 rooms
#   MEMBERS=2000 ROOMS=2 bench/federation/join.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

. bench/federation/common.sh
MEMBERS="${MEMBERS:-1000}"
ROOMS="${ROOMS:-3}"

start_tern joiner
JOINER=$URL
start_tern holder
HOLDER=$URL
"$B/tern-bench" --mode remote-join --url "$JOINER,$HOLDER" --users "$MEMBERS" --rooms "$ROOMS"
