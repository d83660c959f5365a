#!/usr/bin/env bash
# Renders `portcullis scan --format html` in headless Chromium and checks that the page shows
# every finding: the demo shop (every weakness on) on loopback, two users registered, one scan.
#
#   bash bench/check-html-report.sh     # installs chromium when missing
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || apt-get install -y -qq chromium >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q -p portcullis -p portcullis-shop
BIN="$CARGO_TARGET_DIR/debug"
WORK=$(mktemp -d /tmp/portcullis-html.XXXXXX)
PORT=${PORT:-18181}
"$BIN/portcullis-shop" --listen "127.0.0.1:$PORT" --vuln all --db "$WORK/shop.db" >/dev/null 2>&1 &
SHOP=$!
trap 'kill $SHOP 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
for u in alice bob; do
  curl -sf -X POST "http://127.0.0.1:$PORT/v2/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$u@example.com\",\"password\":\"correct horse battery staple 42\",\"name\":\"$u\"}" >/dev/null
done
cat > "$WORK/identities.yaml" <<YAML
identities:
  - name: alice
    login: { path: /v2/auth/login, body: { email: alice@example.com, password: "correct horse battery staple 42" }, token: /access_token, refresh_token: /refresh_token }
  - name: bob
    login: { path: /v2/auth/login, body: { email: bob@example.com, password: "correct horse battery staple 42" }, token: /access_token, refresh_token: /refresh_token }
YAML
"$BIN/portcullis" scan --target "http://127.0.0.1:$PORT" --spec examples/shop/openapi.yaml \
  --identities "$WORK/identities.yaml" --format html -o "$WORK/report.html" --fail-on critical 2>/dev/null || true
chromium --headless --no-sandbox --disable-gpu --dump-dom "file://$WORK/report.html" 2>/dev/null > "$WORK/dom.html"
WANT=$(grep -o '[0-9]* finding(s)' "$WORK/dom.html" | head -1 | cut -d' ' -f1)
GOT=$(grep -o 'class="finding sev-' "$WORK/dom.html" | wc -l)
BARS=$(grep -o '<rect ' "$WORK/dom.html" | wc -l)
echo "findings announced: ${WANT:-?}; finding sections rendered by Chromium: $GOT; chart bars: $BARS"
[ -n "$WANT" ] && [ "$GOT" -ge 1 ] && [ "$GOT" -eq "$WANT" ] && [ "$BARS" -eq 5 ] || { echo "the HTML report does not show the findings" >&2; exit 1; }
echo "ok"
