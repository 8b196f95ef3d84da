#!/usr/bin/env bash
# Instructions per fresh read, counted by valgrind's callgrind: repeatable on a shared,
# noisy machine where timings are not. Each proxy runs under callgrind, pinned to one
# core (so tokio runs one worker and the count does not depend on work stealing), in
# front of the same origin (one nginx worker answering from memory). After a warm-up,
# instrumentation is switched on for exactly --requests token-gated `GET /users/1`
# reads (8 keep-alive connections, closed loop), then off, so start-up and shutdown are
# left out.
#
#   load-tests/callgrind.sh [--requests N] [--floor] [--nginx] [--keep DIR] BIN [BIN ...]
#
# BIN: tidemark binaries (e.g. target/production/tidemark and a baseline build); --floor
# adds the bare hyper proxy (`tidemark-load floor-proxy`), --nginx a one-worker nginx.
# Prints instructions per request for each, and keeps the callgrind files in --keep
# (default: a temp dir, printed) for `callgrind_annotate`.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=5000
floor=""
with_nginx=""
keep=""
bins=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) requests="$2"; shift 2 ;;
    --floor) floor=1; shift ;;
    --nginx) with_nginx=1; shift ;;
    --keep) keep="$2"; shift 2 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) bins+=("$1"); shift ;;
  esac
done
for tool in valgrind callgrind_control nginx curl; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing (apt-get install valgrind nginx curl)" >&2; exit 2; }
done
# The floor is measured as built by the production profile, like the binaries given.
[[ -x target/production/tidemark-load ]] || cargo build --profile production -p tidemark-load
load="${TIDEMARK_LOAD:-$(pwd)/target/production/tidemark-load}"
dir="${keep:-$(mktemp -d /tmp/tidemark-callgrind.XXXXXX)}"
mkdir -p "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # URL, seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    (( SECONDS < deadline )) || { echo "callgrind.sh: $1 did not answer within $2 s" >&2; return 1; }
    sleep 0.2
  done
}
nginx_conf() { # dir, listen, body-of-location
  cat <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 10000000;
    upstream origin { server 127.0.0.1:$origin_port; keepalive 64; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$2;
        location / {
$3
        }
    }
}
EOF
}

# The origin: GET answers a user, PUT answers a write position (the token's source).
origin_port=$(free_port)
mkdir -p "$dir/origin"
nginx_conf "$dir/origin" "$origin_port" '            default_type application/json;
            if ($request_method = PUT) { add_header Write-Position "users=1"; return 200 "{}"; }
            return 200 "{\"id\":\"1\",\"name\":\"load\",\"version\":1}";' > "$dir/origin/nginx.conf"
taskset -c 0 nginx -p "$dir/origin" -e "$dir/origin/error.log" -c "$dir/origin/nginx.conf" &
pids+=($!)
wait_http "http://127.0.0.1:$origin_port/users/1" 10

count_ir() { # name, pid, port, header...
  local name=$1 pid=$2 port=$3; shift 3
  local hdrs=()
  for h in "$@"; do hdrs+=(--header "$h"); done
  "$load" count --addr "127.0.0.1:$port" --requests 504 --connections 8 "${hdrs[@]}" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "$load" count --addr "127.0.0.1:$port" --requests "$requests" --connections 8 "${hdrs[@]}" >/dev/null
  callgrind_control -i off "$pid" >/dev/null 2>&1
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$dir/$name.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')
  [[ -n "$total" ]] || { echo "callgrind.sh: no totals in $dir/$name.callgrind" >&2; exit 1; }
  printf '%-28s %14s instructions  %10.0f per request\n' "$name" "$total" "$(echo "$total / $requests" | bc -l)"
}

echo "requests: $requests per target; callgrind files in $dir"
i=0
for bin in "${bins[@]}"; do
  i=$((i + 1))
  name="tidemark-$i-$(basename "$bin")"
  port=$(free_port); admin=$(free_port)
  cat > "$dir/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"

[token]
secret_env = "TIDEMARK_SECRET"

[upstreams.origin]
url = "http://127.0.0.1:$origin_port"

[projections.users]
logs = ["users"]
sources = ["push"]

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "origin"
default_log = "users"

[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{id}"
upstream = "origin"
projection = "users"
max_wait = "1s"
EOF
  TIDEMARK_SECRET=callgrind-secret-0123456789abcdef-0123456789 RUST_LOG=info taskset -c 1 \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/$name.callgrind" \
    "$bin" run --config "$dir/$name.toml" > "$dir/$name.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$admin/healthz" 120
  token=$(curl -fsS -X PUT -o /dev/null -D - -H 'content-type: application/json' -d '{}' \
    "http://127.0.0.1:$port/users/1" | awk -F': ' 'tolower($1) == "consistency-token" { sub("\r", "", $2); print $2 }')
  [[ -n "$token" ]] || { echo "callgrind.sh: no token from $bin" >&2; exit 1; }
  curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' -d '{"users": 1}' \
    "http://127.0.0.1:$admin/projections/users/checkpoint?instance=default"
  source=$(curl -fsS -o /dev/null -D - -H "consistency-token: $token" "http://127.0.0.1:$port/users/1" \
    | awk -F': ' 'tolower($1) == "consistency-source" { sub("\r", "", $2); print $2 }')
  [[ "$source" == "projection" ]] || { echo "callgrind.sh: $bin answered from '$source', not projection" >&2; exit 1; }
  count_ir "$name" "$pid" "$port" "consistency-token: $token"
done

if [[ -n "$floor" ]]; then
  port=$(free_port)
  taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/hyper-floor.callgrind" \
    "$load" floor-proxy --listen "127.0.0.1:$port" --upstream "127.0.0.1:$origin_port" > "$dir/hyper-floor.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/users/1" 120
  count_ir hyper-floor "$pid" "$port" "consistency-token: x"
fi

if [[ -n "$with_nginx" ]]; then
  port=$(free_port)
  mkdir -p "$dir/nginx"
  nginx_conf "$dir/nginx" "$port" '            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";' > "$dir/nginx/nginx.conf"
  taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/nginx.callgrind" \
    nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf" > "$dir/nginx.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/users/1" 120
  count_ir nginx "$pid" "$port" "consistency-token: x"
fi
