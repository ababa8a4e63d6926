#!/usr/bin/env bash
# Peak RSS of the server during one large media upload and download
# (docs/benchmarks.md). Starts the release binary on a free loopback port with
# a fresh data directory, registers a user, uploads SIZE_MB of random bytes
# with curl streaming from a file (-T), downloads them back, and prints the
# server's VmHWM (peak resident set) from /proc before and after.
#
#   scripts/media-rss.sh [SIZE_MB]      (default 100)
#
# With S3_ENDPOINT set (e.g. a moto_server), the media go to a bucket there
# instead of the filesystem; the binary must be built with `--features s3`.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB="${1:-100}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}"
BIN="${TERN_BIN:-$CARGO_TARGET_DIR/release/homeserver}"
WORK="$(mktemp -d -t tern-media-rss.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

printf '[media]\nmax_upload_bytes = %d\n' $(( (SIZE_MB + 1) * 1024 * 1024 )) >"$WORK/tern.toml"
if [ -n "${S3_ENDPOINT:-}" ]; then
    printf 'backend = "s3"\n[media.s3]\nbucket = "tern-rss-%s"\nendpoint = "%s"\naccess_key_id = "test"\nsecret_access_key = "test"\npath_style = true\ncreate_bucket = true\n' \
        "$$" "$S3_ENDPOINT" >>"$WORK/tern.toml"
fi
"$BIN" --config "$WORK/tern.toml" --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    --allow-registration --disable-rate-limits >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 200); do
    PORT="$(sed -n 's/.*listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.log" | head -1)"
    [ -n "$PORT" ] && break
    sleep 0.05
done
[ -n "$PORT" ] || { cat "$WORK/server.log"; echo "server did not start" >&2; exit 1; }
BASE="http://127.0.0.1:$PORT"
hwm() { awk '/^VmHWM/ {print $2 " " $3}' "/proc/$SERVER_PID/status"; }

TOKEN="$(curl -sf --noproxy '*' -X POST "$BASE/_matrix/client/v3/register" \
    -H 'Content-Type: application/json' \
    -d '{"username":"rss","password":"rss-password-1","auth":{"type":"m.login.dummy"}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$WORK/upload.bin"
echo "VmHWM after start-up and registration: $(hwm)"
# Registration's argon2 hash (~19 MiB) set that peak; reset it to the current
# RSS (Linux: clear_refs 5) so the next figures are the media path's own.
echo 5 >"/proc/$SERVER_PID/clear_refs"
echo "VmHWM reset to the current RSS:        $(hwm)"

START=$(date +%s.%N)
URI="$(curl -sf --noproxy '*' -X POST -T "$WORK/upload.bin" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' \
    "$BASE/_matrix/media/v3/upload?filename=big.bin" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["content_uri"])')"
END=$(date +%s.%N)
echo "uploaded $SIZE_MB MB as $URI in $(echo "$END - $START" | bc) s"
echo "VmHWM after the upload:                $(hwm)"

MEDIA="${URI#mxc://}"
curl -sf --noproxy '*' -H "Authorization: Bearer $TOKEN" \
    "$BASE/_matrix/client/v1/media/download/$MEDIA" -o "$WORK/download.bin"
cmp -s "$WORK/upload.bin" "$WORK/download.bin" && echo "download matches the upload"
echo "VmHWM after the download:              $(hwm)"
