#!/usr/bin/env bash
# cloakroom beside nginx and PHP, on this machine, in one run.
#
#   bash benches/compare.sh            # ~5 min: 3 interleaved rounds
#   ROUNDS=1 DURATION=3 bash benches/compare.sh    # a quick look
#
# 1. Cookie mode: an nginx upstream serves a 2 KB page; nginx as a plain
#    proxy (1 worker, no sessions) and cloakroom (memory store, a logged-in
#    session, the page protected) stand in front of it. wrk at 64
#    connections and at 1, rounds interleaved; req/s, p50/p99 and the
#    proxy's CPU per request (from /proc), and cloakroom/nginx per round.
#    cloakroom runs three times: as configured by default (one work-stealing
#    runtime), with `server.work_stealing = false` (a runtime per core), and
#    with that and `server.threads = 1` (one thread, as nginx's one worker).
#    `cloakroom load` runs the same setup for comparison with wrk.
# 2. URL mode: a generated link-dense page (~1.15 MB, 12,600 links, some
#    off-site) served by PHP with session.use_trans_sid (php-cli's built-in
#    server) and by cloakroom to a cookieless client. The cost of rewriting
#    is each one's time per page minus the same page served plain; the
#    script also counts session IDs in off-site links.
#
# Installs what it needs with apt-get (nginx, wrk, php-cli, curl) when
# missing. Everything listens on 127.0.0.1; every load is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
LAT_DURATION=${LAT_DURATION:-5}
PAGES=${PAGES:-200}           # link-dense pages per measurement
BASE_PORT=${BASE_PORT:-19100}
UP=$BASE_PORT; NGX=$((BASE_PORT + 1)); CLK=$((BASE_PORT + 2))
PHP_TS=$((BASE_PORT + 3)); PHP_PLAIN=$((BASE_PORT + 4)); CLK_URL=$((BASE_PORT + 5))
CLK_PC=$((BASE_PORT + 6)); CLK_1T=$((BASE_PORT + 7))
WORK=$(mktemp -d /tmp/cloakroom-compare.XXXXXX)
# nginx workers run as an unprivileged user: they must read the pages.
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/up.pid" ] && kill "$(cat "$WORK/up.pid")" 2>/dev/null || true
  [ -f "$WORK/ngx.pid" ] && kill "$(cat "$WORK/ngx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v php >/dev/null 2>&1 || need+=(php-cli)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "compare.sh: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts the system nginx on install; this script runs its own.
  $SUDO systemctl stop nginx 2>/dev/null || $SUDO service nginx stop 2>/dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked -q
BIN=$PWD/target/release/cloakroom

# ---- pages -------------------------------------------------------------------
mkdir -p "$WORK/www/app" "$WORK/logs"
python3 - "$WORK/www" <<'PY'
import sys, pathlib
www = pathlib.Path(sys.argv[1])
links = "".join(f'<li><a href="/app/item/{i}">Item {i}</a></li>\n' for i in range(40))
page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Demo</title></head>
<body><h1>A legacy page</h1><ul>\n{links}</ul>
<form method="post" action="/app/search"><input name="q"><button>Go</button></form>
</body></html>\n"""
(www / "app" / "index.html").write_text(page[:2048].ljust(2048) if len(page) > 2048 else page + " " * (2048 - len(page)))
rows = []
for i in range(12600):
    if i % 10 == 9:
        rows.append(f'<li><a href="https://elsewhere.example/ref/{i}?from=list">Partner {i}</a> and a few words of text</li>')
    else:
        rows.append(f'<li><a href="/app/item/{i}?sort=name&amp;page={i % 50}">Item number {i}</a> with a description</li>')
dense = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Catalogue</title></head><body><ul>\n" + "\n".join(rows) + "\n</ul></body></html>\n"
(www / "app" / "dense.html").write_text(dense)
(www / "dense.html").write_text(dense)
PY

# ---- servers -----------------------------------------------------------------
cat >"$WORK/up.conf" <<EOF
worker_processes 1; daemon on; pid $WORK/up.pid; error_log $WORK/logs/up.err warn;
events { worker_connections 4096; }
http { access_log off; server_tokens off; sendfile on; tcp_nodelay on;
  keepalive_requests 1000000; types { text/html html; } default_type text/html;
  client_body_temp_path $WORK/tmp-up; proxy_temp_path $WORK/tmp-up;
  fastcgi_temp_path $WORK/tmp-up; uwsgi_temp_path $WORK/tmp-up; scgi_temp_path $WORK/tmp-up;
  server { listen 127.0.0.1:$UP backlog=4096; root $WORK/www;
    location = /app/ { try_files /app/index.html =404; } } }
EOF
cat >"$WORK/ngx.conf" <<EOF
worker_processes 1; daemon on; pid $WORK/ngx.pid; error_log $WORK/logs/ngx.err warn;
events { worker_connections 4096; }
http { access_log off; server_tokens off; tcp_nodelay on; keepalive_requests 1000000;
  client_body_temp_path $WORK/tmp-ngx; proxy_temp_path $WORK/tmp-ngx;
  fastcgi_temp_path $WORK/tmp-ngx; uwsgi_temp_path $WORK/tmp-ngx; scgi_temp_path $WORK/tmp-ngx;
  upstream app { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX backlog=4096;
    location / { proxy_pass http://app; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$host; } } }
EOF
"$NGINX" -c "$WORK/up.conf" -p "$WORK" 2>/dev/null
"$NGINX" -c "$WORK/ngx.conf" -p "$WORK" 2>/dev/null

echo wonderland | "$BIN" hash-password >"$WORK/hash" 2>/dev/null
printf 'alice = "%s"\n' "$(cat "$WORK/hash")" >"$WORK/users.toml"
cloakroom_conf() { # port, extra [session] lines
  cat <<EOF
listen = "127.0.0.1:$1"
[upstream]
url = "http://127.0.0.1:$UP"
pool_max_idle = 64
[session]
store = "memory"
secret_file = "$WORK/cloakroom.key"
$2
[auth]
users_file = "$WORK/users.toml"
protect = ["/app/"]
[log]
level = "warn"
EOF
}
cloakroom_conf "$CLK" "" >"$WORK/cloakroom.toml"
cloakroom_conf "$CLK_URL" "" >"$WORK/cloakroom-url.toml"
{ cloakroom_conf "$CLK_PC" ""; printf '[server]\nwork_stealing = false\n'; } >"$WORK/cloakroom-percore.toml"
{ cloakroom_conf "$CLK_1T" ""; printf '[server]\nwork_stealing = false\nthreads = 1\n'; } >"$WORK/cloakroom-1thread.toml"
started=$(date +%s%N)
"$BIN" run --config "$WORK/cloakroom.toml" 2>"$WORK/logs/cloakroom.err" & PIDS+=($!); CLK_PID=$!
"$BIN" run --config "$WORK/cloakroom-percore.toml" 2>"$WORK/logs/cloakroom-percore.err" & PIDS+=($!); CLK_PC_PID=$!
"$BIN" run --config "$WORK/cloakroom-1thread.toml" 2>"$WORK/logs/cloakroom-1thread.err" & PIDS+=($!); CLK_1T_PID=$!
"$BIN" run --config "$WORK/cloakroom-url.toml" 2>"$WORK/logs/cloakroom-url.err" & PIDS+=($!)

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
wait_port "$CLK"
START_MS=$(( ($(date +%s%N) - started) / 1000000 ))
IDLE_RSS_KB=$(awk '/VmRSS/ { print $2 }' "/proc/$CLK_PID/status")
wait_port "$UP"; wait_port "$NGX"; wait_port "$CLK_URL"; wait_port "$CLK_PC"; wait_port "$CLK_1T"

# Log alice in (the login form's CSRF token and cookie, then the POST).
login() { # port -> "Cookie: NAME=VALUE"
  local jar="$WORK/jar.$1" csrf
  csrf=$(curl -s -c "$jar" "http://127.0.0.1:$1/.cloakroom/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p')
  curl -s -b "$jar" -c "$jar" -o /dev/null -H "Origin: http://127.0.0.1:$1" \
    --data-urlencode "csrf=$csrf" --data "username=alice&password=wonderland&return_to=/app/" \
    "http://127.0.0.1:$1/.cloakroom/login"
  awk '$6 == "CLOAKROOMSID" { print "Cookie: CLOAKROOMSID=" $7 }' "$jar"
}
COOKIE=$(login "$CLK")
[ -n "$COOKIE" ] || { echo "compare.sh: could not log in" >&2; exit 1; }
curl -sf -H "$COOKIE" -o /dev/null "http://127.0.0.1:$CLK/app/" || { echo "compare.sh: logged-in page failed" >&2; exit 1; }
COOKIE_PC=$(login "$CLK_PC")
curl -sf -H "$COOKIE_PC" -o /dev/null "http://127.0.0.1:$CLK_PC/app/" || { echo "compare.sh: logged-in page (per core) failed" >&2; exit 1; }
COOKIE_1T=$(login "$CLK_1T")
curl -sf -H "$COOKIE_1T" -o /dev/null "http://127.0.0.1:$CLK_1T/app/" || { echo "compare.sh: logged-in page (one thread) failed" >&2; exit 1; }

# ---- 1. cookie mode ------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
ngx_worker() { pgrep -P "$(cat "$WORK/ngx.pid")" | head -1; }
run_wrk() { # name url pid conns secs header...
  local name=$1 url=$2 pid=$3 conns=$4 secs=$5; shift 5
  local before after out rps p50 p99 reqs
  before=$(cpu_ticks "$pid")
  out=$(timeout $((secs + 10)) wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url")
  after=$(cpu_ticks "$pid")
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  local errs; errs=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
  local cpu_us; cpu_us=$(awk -v t=$((after - before)) -v hz="$TICK" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$errs" >>"$WORK/runs.tsv"
}
: >"$WORK/runs.tsv"
for round in $(seq "$ROUNDS"); do
  order=(nginx cloakroom cloakroom-percore cloakroom-1thread)
  [ $((round % 2)) -eq 0 ] && order=(cloakroom-1thread cloakroom-percore cloakroom nginx)
  for t in "${order[@]}"; do
    case "$t" in
    nginx)
      run_wrk nginx "http://127.0.0.1:$NGX/app/" "$(ngx_worker)" 64 "$DURATION"
      run_wrk nginx "http://127.0.0.1:$NGX/app/" "$(ngx_worker)" 1 "$LAT_DURATION" ;;
    cloakroom)
      run_wrk cloakroom "http://127.0.0.1:$CLK/app/" "$CLK_PID" 64 "$DURATION" -H "$COOKIE"
      run_wrk cloakroom "http://127.0.0.1:$CLK/app/" "$CLK_PID" 1 "$LAT_DURATION" -H "$COOKIE" ;;
    cloakroom-percore)
      run_wrk cloakroom-percore "http://127.0.0.1:$CLK_PC/app/" "$CLK_PC_PID" 64 "$DURATION" -H "$COOKIE_PC"
      run_wrk cloakroom-percore "http://127.0.0.1:$CLK_PC/app/" "$CLK_PC_PID" 1 "$LAT_DURATION" -H "$COOKIE_PC" ;;
    cloakroom-1thread)
      run_wrk cloakroom-1thread "http://127.0.0.1:$CLK_1T/app/" "$CLK_1T_PID" 64 "$DURATION" -H "$COOKIE_1T"
      run_wrk cloakroom-1thread "http://127.0.0.1:$CLK_1T/app/" "$CLK_1T_PID" 1 "$LAT_DURATION" -H "$COOKIE_1T" ;;
    esac
  done
done
"$BIN" load --target "http://127.0.0.1:$CLK/app/" --users 64 --duration "${DURATION}s" \
  --login alice:wonderland --json >"$WORK/load.json" 2>/dev/null || true

python3 - "$WORK/runs.tsv" "$WORK/load.json" <<'PY'
import sys, json, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def ms(v):
    v = v.strip()
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit): return float(v[: -len(unit)]) * f
    return float(v)
by = {}
for name, conns, rps, p50, p99, cpu, errs in rows:
    by.setdefault((name, conns), []).append((float(rps), ms(p50), ms(p99), float(cpu), errs))
print("\n## Cookie mode: 2 KB page, logged-in session (cloakroom) vs plain proxy (nginx)\n")
print("| proxy | conns | req/s (median) | p50 ms | p99 ms | proxy CPU µs/req | errors |")
print("|---|--:|--:|--:|--:|--:|---|")
for (name, conns), v in sorted(by.items()):
    med = lambda i: st.median(x[i] for x in v)
    errs = " ".join(sorted({x[4] for x in v if x[4].strip()})) or "0"
    print(f"| {name} | {conns} | {med(0):,.0f} | {med(1):.3f} | {med(2):.3f} | {med(3):.1f} | {errs} |")
print("\n| ratio (per round, then median) | c64 | c1 |\n|---|--:|--:|")
for label, i, who in ((f"{m} {w} / nginx", i, w) for w in ("cloakroom", "cloakroom-percore", "cloakroom-1thread") for m, i in (("req/s", 0), ("p99", 2), ("CPU µs/req", 3))):
    cells = []
    for conns in ("64", "1"):
        a, b = by.get((who, conns), []), by.get(("nginx", conns), [])
        r = [x[i] / y[i] for x, y in zip(a, b) if y[i]]
        cells.append(f"{st.median(r):.2f} ({min(r):.2f}–{max(r):.2f})" if r else "–")
    print(f"| {label} | {cells[0]} | {cells[1]} |")
try:
    load = json.load(open(sys.argv[2]))
    lat = load.get("latency_ms", {})
    print(f"\n`cloakroom load --users 64 --login alice:…` on cloakroom: {load['rps']:,.0f} req/s, "
          f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, errors {load.get('errors')}, lost sessions {load.get('lost_sessions')}")
except Exception as e:
    print(f"\n(cloakroom load: no result: {e})")
PY

# ---- 2. URL mode vs PHP trans-sid ------------------------------------------------
cat >"$WORK/page.php" <<'EOF'
<?php
session_start();
readfile(__DIR__ . '/www/dense.html');
EOF
PHPOPTS=(-d session.use_cookies=0 -d session.use_only_cookies=0 -d session.save_path="$WORK" -d output_buffering=4096)
(cd "$WORK" && exec php "${PHPOPTS[@]}" -d session.use_trans_sid=1 -S "127.0.0.1:$PHP_TS" page.php >/dev/null 2>&1) & PIDS+=($!)
(cd "$WORK" && exec php "${PHPOPTS[@]}" -d session.use_trans_sid=0 -S "127.0.0.1:$PHP_PLAIN" page.php >/dev/null 2>&1) & PIDS+=($!)
wait_port "$PHP_TS"; wait_port "$PHP_PLAIN"

# A cookieless client of cloakroom: the probe's second answer carries the
# ticket (bound to the client's User-Agent: every client here sends UA).
UA="compare.sh"
first=$(curl -s -A "$UA" -D - -o /dev/null -H 'Accept: text/html' "http://127.0.0.1:$CLK_URL/dense.html" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
ticket_url=$(curl -s -A "$UA" -D - -o /dev/null -H 'Accept: text/html' "http://127.0.0.1:$CLK_URL$first" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case "$ticket_url" in http*) ;; *) ticket_url="http://127.0.0.1:$CLK_URL$ticket_url" ;; esac
URL_COOKIE=$(login "$CLK_URL")

# PHP: one session, its ID in the URL as trans-sid expects.
curl -s -o "$WORK/php-first.html" "http://127.0.0.1:$PHP_TS/page.php"
php_sid=$(grep -o -m1 'PHPSESSID=[a-z0-9,-]*' "$WORK/php-first.html" | sed -n 1p)

time_pages() { # url [header] -> ms per page (sequential, PAGES times), bytes, IDs in the page
  local url=$1; shift
  python3 - "$url" "$PAGES" "User-Agent: $UA" "$@" <<'PY'
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
hdr = dict(h.split(": ", 1) for h in sys.argv[3:])
def one():
    req = urllib.request.Request(url, headers={"Accept": "text/html", **hdr})
    with urllib.request.urlopen(req) as r: return r.read()
one()
t = time.perf_counter()
for _ in range(n): body = one()
ids = body.count(b"CLOAKROOMSID=") + body.count(b"PHPSESSID=")
print(f"{(time.perf_counter() - t) * 1000 / n:.3f} {len(body)} {ids}")
PY
}
offsite_ids() { # url [header] -> session IDs found in off-site links
  curl -s -A "$UA" -H 'Accept: text/html' ${2:+-H "$2"} "$1" | grep -o 'https://elsewhere.example[^"]*' | grep -c -E 'PHPSESSID|CLOAKROOMSID' || true
}
: >"$WORK/url.tsv"
for round in $(seq "$ROUNDS"); do
  read -r php_ts _ < <(time_pages "http://127.0.0.1:$PHP_TS/page.php?$php_sid")
  read -r php_plain _ < <(time_pages "http://127.0.0.1:$PHP_PLAIN/page.php?$php_sid")
  read -r clk_url _ clk_ids < <(time_pages "$ticket_url")
  [ "${clk_ids:-0}" -gt 10000 ] || { echo "compare.sh: the URL-mode page was not rewritten ($clk_ids IDs)" >&2; exit 1; }
  read -r clk_cookie _ < <(time_pages "http://127.0.0.1:$CLK_URL/dense.html" "$URL_COOKIE")
  printf '%s\t%s\t%s\t%s\n' "$php_ts" "$php_plain" "$clk_url" "$clk_cookie" >>"$WORK/url.tsv"
done
php_leaks=$(offsite_ids "http://127.0.0.1:$PHP_TS/page.php?$php_sid")
clk_leaks=$(offsite_ids "$ticket_url")
rewritten() { curl -s -A "$UA" -H 'Accept: text/html' "$1" | grep -o -E 'href="[^"]*(PHPSESSID|CLOAKROOMSID)=' | wc -l; }
php_links=$(rewritten "http://127.0.0.1:$PHP_TS/page.php?$php_sid")
clk_links=$(rewritten "$ticket_url")
python3 - "$WORK/url.tsv" "$php_leaks" "$clk_leaks" "$php_links" "$clk_links" <<'PY'
import sys, statistics as st
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
php = [r[0] - r[1] for r in rows]; clk = [r[2] - r[3] for r in rows]
print("\n## URL mode: rewriting the link-dense page (~1.15 MB, 12,600 links) for a cookieless client\n")
print("| | ms per page (median) | rewriting cost ms | links carrying the ID | IDs in off-site links |")
print("|---|--:|--:|--:|--:|")
print(f"| PHP, session.use_trans_sid | {st.median(r[0] for r in rows):.2f} | {st.median(php):.2f} | {sys.argv[4]} | {sys.argv[2]} |")
print(f"| PHP, plain | {st.median(r[1] for r in rows):.2f} | – | – | – |")
print(f"| cloakroom, URL mode | {st.median(r[2] for r in rows):.2f} | {st.median(clk):.2f} | {sys.argv[5]} | {sys.argv[3]} |")
print(f"| cloakroom, cookie mode | {st.median(r[3] for r in rows):.2f} | – | – | – |")
r = [c / p for c, p in zip(clk, php) if p > 0]
if r: print(f"\nrewriting cost cloakroom / PHP (per round, median): {st.median(r):.2f} ({min(r):.2f}–{max(r):.2f})")
PY
echo
echo "cloakroom start-up (launch to first answer, memory store): ${START_MS} ms; idle RSS: $((IDLE_RSS_KB / 1024)) MiB"
echo "machine: $(nproc) cores, $(uname -sr); $(date -u +%Y-%m-%d); raw data in $WORK"
