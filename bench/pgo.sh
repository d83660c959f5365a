#!/usr/bin/env bash
# The release build: `dist` (fat LTO, one codegen unit) with profile-guided optimisation.
#
#   bash bench/pgo.sh                # prints the binary's path on its last line
#   PORTCULLIS=$(bash bench/pgo.sh | tail -1) bash bench/run.sh
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
  rustup component add llvm-tools >&2 || { echo "llvm-profdata missing: rustup component add llvm-tools" >&2; exit 69; }
fi
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

PGO="$CARGO_TARGET_DIR/pgo"
rm -rf "$PGO/raw"
mkdir -p "$PGO/raw"
echo "pgo: instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$PGO/raw" cargo build -q --profile dist -p portcullis \
  --target "$HOST" --target-dir "$PGO/gen-target"
GEN="$PGO/gen-target/$HOST/dist/portcullis"

echo "pgo: training on the demo" >&2
GW=19401; SHOP=19402
WORK=$(mktemp -d /tmp/portcullis-pgo.XXXXXX)
DEMO=
cleanup() { [ -n "$DEMO" ] && kill "$DEMO" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
(cd "$WORK" && RUST_LOG=warn exec "$GEN" demo --port $GW --shop-port $SHOP >"$WORK/demo.out" 2>&1) &
DEMO=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$GW/v2/products" >/dev/null && break
  sleep 0.1
done
B="http://127.0.0.1:$GW"
ID=$(curl -sf "$B/v2/products" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
[ -n "$ID" ] || { echo "pgo: the demo did not answer:" >&2; cat "$WORK/demo.out" >&2; exit 70; }
curl -s -XPOST "$B/v2/auth/register" -H 'content-type: application/json' \
  -d '{"email":"pgo@example.com","password":"a long training passphrase","name":"Pgo"}' >/dev/null
TOKEN=$(curl -s -XPOST "$B/v2/auth/login" -H 'content-type: application/json' \
  -d '{"email":"pgo@example.com","password":"a long training passphrase"}' | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$TOKEN" ] || { echo "pgo: no token from the demo's login" >&2; exit 70; }
load() { wrk -t1 -c"$1" -d"$2" "${@:3}" >/dev/null; }
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
kill -TERM "$DEMO"
wait "$DEMO" || true
DEMO=

"$PROFDATA" merge -o "$PGO/merged.profdata" "$PGO/raw"
# Named by its contents: the flags name the file, and Cargo rebuilds when the flags change,
# not when a file they name does.
SUM=$(sha256sum "$PGO/merged.profdata" | cut -c1-16)
mv "$PGO/merged.profdata" "$PGO/portcullis-$SUM.profdata"
echo "pgo: optimised build" >&2
RUSTFLAGS="-Cprofile-use=$PGO/portcullis-$SUM.profdata" cargo build -q --profile dist -p portcullis \
  --target "$HOST" --target-dir "$PGO/use-target"
echo "$PGO/use-target/$HOST/dist/portcullis"
