#!/bin/bash
# Per-request cost of an njs module in a real nginx: one worker pinned to core 0, wrk on core 1.
# usage: measure-cost.sh module.js [export-name] [seconds]
# Prints req/s and the worker's CPU µs per request (utime+stime / requests); the CPU figure is
# the stable one on a shared machine. Needs root (user www-data), nginx + njs, wrk, taskset.
M=$(readlink -f $1); FN=${2:-content}; D=${3:-2}
T=$(mktemp -d /tmp/tsgi-njs-cost.XXXX); chmod 755 $T; cp $M $T/m.js; chmod 644 $T/m.js
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
# The http-level map the generated config has (config.ts plainHostMap; needs the built dist/).
HERE=$(dirname $(readlink -f $0))
MAP=$(node -e "import('$HERE/../dist/config.js').then((m) => console.log(m.plainHostMap().filter((l) => !l.startsWith('#')).join(' ')))")
cat > $T/nginx.conf <<C
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
user www-data;
daemon off; master_process on; worker_processes 1; worker_cpu_affinity 01; pcre_jit on;
pid $T/nginx.pid; error_log $T/error.log warn;
events { worker_connections 1024; }
http { access_log off; js_path $T; js_import m from m.js; js_var \$tsgi_user; default_type "";
  $MAP
  server { listen 127.0.0.1:$PORT; location / { js_content m.$FN; } location = /ret { return 200 "hello"; } } }
C
grep -q tsgi_plain_host $T/nginx.conf || { echo "no plain-host map (build adapters/nginx first)"; rm -rf $T; exit 1; }
nginx -c $T/nginx.conf -p $T & NP=$!
sleep 0.4
W=$(pgrep -P $NP | head -1)
taskset -c 1 wrk -t1 -c16 -d1s http://127.0.0.1:$PORT/x?a=1 >/dev/null
c0=$(awk '{print $14+$15}' /proc/$W/stat)
OUT=$(taskset -c 1 wrk -t1 -c32 -d${D}s http://127.0.0.1:$PORT/x?a=1)
c1=$(awk '{print $14+$15}' /proc/$W/stat)
N=$(echo "$OUT" | awk '/requests in/{print $1}'); RPS=$(echo "$OUT" | awk '/Requests\/sec/{print $2}')
NON=$(echo "$OUT" | grep -E "Non-2xx|Socket errors")
echo "$(basename $1) rps=$RPS cpu_us_per_req=$(python3 -c "print(round(($c1-$c0)*10000/$N,2))") $NON"
kill $NP; wait $NP 2>/dev/null; grep -v "signal\|exited\|gracefully\|start worker\|using" $T/error.log | head -3; rm -rf $T
