#!/usr/bin/env bash
# The release build: `dist` (fat LTO, one codegen unit) with profile-guided optimisation.
#
#   bash bench/pgo.sh                # prints the binary's path on its last line
#   bash bench/run.sh                # builds it, and measures it beside the plain `dist` build
#
# 1. An instrumented build counts, as it runs, how often each branch and call is taken.
# 2. It is trained on the demo (`portcullis demo`: the shop behind the gateway with the shop's
#    OpenAPI description as inventory, answers validated and filtered, CORS, RS256 tokens from
#    the shop's JWKS), on loopback: public reads, reads with a token, refusals (undeclared
#    routes, wrong methods, traversal, missing and forged tokens, a foreign origin), a
#    preflight. Not on the benchmark: neither its upstream nor its policy nor its path.
# 3. The counts are merged (llvm-profdata, from rustup's `llvm-tools` component, which has
#    the LLVM of the compiler) and the optimised build reads them: hot code is laid out
#    together and inlined where it is hot, cold code is kept out of the way. The proxy's code
#    is spread over hyper, http, tokio and the gateway's crates; between its system calls the
#    kernel evicts it from the instruction cache, and without a profile the hot path touched
#    about twice the instruction cache lines nginx's does per request (callgrind's cache
#    model).
#
# Both builds have their own target directories under $CARGO_TARGET_DIR (their flags differ;
# one directory would rebuild everything each time). Training is bounded (about 30 s). A new
# profile rebuilds every crate it covers (about 8 minutes on 2 cores); the instrumented build
# is incremental like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  rustup component add llvm-tools >&2 || true
  [ -x "$PROFDATA" ] || { echo "pgo: $PROFDATA missing: rustup component add llvm-tools" >&2; exit 69; }
fi
for tool in curl wrk; do
  command -v $tool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $tool >/dev/null; }
done

# Absolute: the instrumented demo runs in a directory of its own, and writes its counts here.
mkdir -p "$CARGO_TARGET_DIR/pgo"
PGO=$(cd "$CARGO_TARGET_DIR/pgo" && pwd)
rm -rf "$PGO/raw" "$PGO"/portcullis-*.profdata
mkdir -p "$PGO/raw"
# The caller's flags stay (both builds, and the plain `dist` one, get them); the profile's
# are added.
FLAGS=${RUSTFLAGS:-}
echo "pgo: instrumented build" >&2
RUSTFLAGS="$FLAGS -Cprofile-generate=$PGO/raw" cargo build -q --profile dist -p portcullis \
  --target "$HOST" --target-dir "$PGO/gen-target"
GEN="$PGO/gen-target/$HOST/dist/portcullis"

echo "pgo: training on the demo" >&2
GW=19401; SHOP=19402
WORK=$(mktemp -d /tmp/portcullis-pgo.XXXXXX)
DEMO=
cleanup() {
  if [ -n "$DEMO" ]; then kill "$DEMO" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
failed() { echo "pgo: $1; the demo said:" >&2; cat "$WORK/demo.out" >&2; exit 70; }
(cd "$WORK" && RUST_LOG=warn exec "$GEN" demo --port $GW --shop-port $SHOP >"$WORK/demo.out" 2>&1) &
DEMO=$!
B="http://127.0.0.1:$GW"
for _ in $(seq 100); do
  kill -0 "$DEMO" 2>/dev/null || failed "the demo stopped"
  curl -sf "$B/v2/products" >/dev/null && break
  sleep 0.1
done
LIST=$(curl -sf "$B/v2/products") || LIST=
ID=
[[ $LIST =~ \"id\":\"([^\"]+)\" ]] && ID=${BASH_REMATCH[1]}
[ -n "$ID" ] || failed "the demo did not answer"
curl -s -XPOST "$B/v2/auth/register" -H 'content-type: application/json' \
  -d '{"email":"pgo@example.com","password":"a long training passphrase","name":"Pgo"}' >/dev/null || true
TOKEN=$(curl -s -XPOST "$B/v2/auth/login" -H 'content-type: application/json' \
  -d '{"email":"pgo@example.com","password":"a long training passphrase"}' | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p') || TOKEN=
[ -n "$TOKEN" ] || failed "no token from the demo's login"
load() { wrk -t1 -c"$1" -d"$2" "${@:3}" >/dev/null || failed "wrk failed on ${*: -1}"; }
load 32 6s "$B/v2/products/$ID"
load 32 4s "$B/v2/products"
load 32 4s -H "Authorization: Bearer $TOKEN" "$B/v2/users/me"
load 16 2s -H "Origin: https://shop.example" "$B/v2/products/$ID"
load 16 2s -H "Origin: https://evil.example" "$B/v2/products/$ID"
load 16 2s "$B/v2/nothing/here"
load 16 2s "$B/v2/users/me"
load 16 2s -H "Authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0." "$B/v2/users/me"
for _ in $(seq 50); do
  curl -s -o /dev/null -X PUT "$B/v2/products"
  curl -s -o /dev/null --path-as-is "$B/v2/products/..;/admin/users"
  curl -s -o /dev/null -X OPTIONS -H "Origin: https://shop.example" \
    -H "Access-Control-Request-Method: POST" "$B/v2/orders"
  curl -s -o /dev/null -XPOST -H 'content-type: application/json' -d '{"broken":' "$B/v2/orders"
done
# The counts are written when the process ends of itself.
kill -TERM "$DEMO" 2>/dev/null || failed "the demo stopped during the training"
for _ in $(seq 100); do
  kill -0 "$DEMO" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$DEMO" 2>/dev/null && failed "the demo did not stop"
wait "$DEMO" || true
DEMO=

"$PROFDATA" merge -o "$PGO/merged.profdata" "$PGO/raw"
# Named by its contents: the flags name the file, and Cargo rebuilds when the flags change,
# not when a file they name does.
SUM=$(sha256sum "$PGO/merged.profdata" | cut -c1-16)
mv "$PGO/merged.profdata" "$PGO/portcullis-$SUM.profdata"
echo "pgo: optimised build" >&2
RUSTFLAGS="$FLAGS -Cprofile-use=$PGO/portcullis-$SUM.profdata" cargo build -q --profile dist -p portcullis \
  --target "$HOST" --target-dir "$PGO/use-target"
echo "$PGO/use-target/$HOST/dist/portcullis"
