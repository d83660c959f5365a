#!/usr/bin/env bash
# `portcullis lint` and Spectral with its OWASP ruleset, side by side in one run, on the same
# descriptions: wall time (best of RUNS) and findings per OWASP API 2023 category.
#
#   bash bench/lint-vs-spectral.sh [SPEC ...]   # default: the shop and ../shared/specs/*.json
#
# Installs @stoplight/spectral-cli and @stoplight/spectral-owasp-ruleset with npm into a
# scratch folder when missing (SPECTRAL_DIR, default /tmp/portcullis-spectral).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SPECTRAL_DIR=${SPECTRAL_DIR:-/tmp/portcullis-spectral}
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
if [ ! -x "$SPECTRAL_DIR/node_modules/.bin/spectral" ]; then
  mkdir -p "$SPECTRAL_DIR"
  (cd "$SPECTRAL_DIR" && npm install --silent @stoplight/spectral-cli @stoplight/spectral-owasp-ruleset >/dev/null)
fi
printf 'extends: ["@stoplight/spectral-owasp-ruleset"]\n' > "$SPECTRAL_DIR/.spectral.yaml"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p portcullis
PORTCULLIS="$CARGO_TARGET_DIR/release/portcullis"
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(examples/shop/openapi.yaml ../shared/specs/*.json)
OUT=$(mktemp -d /tmp/portcullis-lintbench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

best() { # command... -> best wall seconds of RUNS
  local b=999999 t
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f %e -o "$OUT/time" "$@" >/dev/null 2>&1 || true
    t=$(tail -1 "$OUT/time")
    b=$(awk -v a="$b" -v c="$t" 'BEGIN { print (c < a) ? c : a }')
  done
  echo "$b"
}

for spec in "${SPECS[@]}"; do
  name=$(basename "$spec")
  size=$(du -h "$spec" | cut -f1)
  p=$(best "$PORTCULLIS" lint "$spec" --profile strict --fail-on critical -o "$OUT/p.json" --format json)
  s=$(best "$SPECTRAL_DIR/node_modules/.bin/spectral" lint "$spec" -r "$SPECTRAL_DIR/.spectral.yaml" -f json -o "$OUT/s.json" --fail-severity error)
  "$PORTCULLIS" lint "$spec" --profile strict --fail-on critical --format json -o "$OUT/p.json" || true
  "$SPECTRAL_DIR/node_modules/.bin/spectral" lint "$spec" -r "$SPECTRAL_DIR/.spectral.yaml" -f json -o "$OUT/s.json" >/dev/null 2>&1 || true
  echo
  echo "== $name ($size): portcullis ${p}s, spectral+owasp ${s}s: spectral takes $(awk -v a="$s" -v b="$p" 'BEGIN { printf "%.1f", a / b }')x as long"
  python3 - "$OUT/p.json" "$OUT/s.json" <<'PY'
import collections, json, re, sys
p = json.load(open(sys.argv[1]))["findings"]
try:
    s = json.load(open(sys.argv[2]))
except Exception:
    s = []
pc = collections.Counter((f["owasp"] or "load").split(":")[0] for f in p)
sc = collections.Counter((re.search(r"api(\d+)", x.get("code", "")) and "API" + re.search(r"api(\d+)", x["code"]).group(1)) or "other" for x in s)
print(f"{'category':10} {'portcullis':>11} {'spectral':>9}")
for k in sorted(set(pc) | set(sc), key=lambda k: (len(k), k)):
    print(f"{k:10} {pc.get(k, 0):>11} {sc.get(k, 0):>9}")
print(f"{'total':10} {len(p):>11} {len(s):>9}")
PY
done
