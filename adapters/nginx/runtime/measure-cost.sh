#!/bin/bash
# Per-request cost of an njs module in a real nginx.
# usage: measure-cost.sh module.js [export-name] [seconds]
#   default: one worker pinned to core 0, wrk on core 1; prints req/s and the worker's CPU µs per
#            request (utime+stime / requests). Needs root (user www-data), nginx + njs, wrk, taskset.
#   MODE=ir: instructions per request under valgrind (callgrind), the difference of a 50- and a
#            350-request run on one keep-alive connection. Slow (~10 s) but the same to the
#            instruction from run to run, where CPU time moves by 10-25% on a shared machine.
# A tsgi bundle is served as the generated config serves it (config.ts): the $tsgi_plain_host map
# (needs the built adapters/nginx/dist) and the usual request through the bundle's `plain` entry.
M=$(readlink -f $1); FN=${2:-content}; D=${3:-2}
HERE=$(dirname $(readlink -f $0))
MAP=$(node -e "import('$HERE/../dist/config.js').then((m) => console.log(m.plainHostMap().filter((l) => !l.startsWith('#')).join(' ')))")
[ -n "$MAP" ] || { echo "no plain-host map (build adapters/nginx first)"; exit 1; }
PLAIN=""; grep -q "plain: plainContent" $M && [ "$FN" = content ] && PLAIN='if ($tsgi_plain_host) { js_content m.plain; }'
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# conf DIR PORT MAIN-LINE: the nginx.conf of one run
conf() {
  cat > $1/nginx.conf <<C
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
$3 pcre_jit on;
pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 1024; }
http { access_log off; js_path $1; js_import m from m.js; js_var \$tsgi_user; default_type "";
  $MAP
  server { listen 127.0.0.1:$2; location / { js_content m.$FN; $PLAIN } location = /ret { return 200 "hello"; } } }
C
}

# irrun N: total instructions of nginx serving N requests
irrun() {
  local T=$(mktemp -d /tmp/tsgi-njs-cost.XXXX) PORT=$(freeport)
  chmod 755 $T; cp $M $T/m.js; chmod 644 $T/m.js
  conf $T $PORT "daemon off; master_process off;"
  valgrind --tool=callgrind --callgrind-out-file=$T/cg.out nginx -c $T/nginx.conf -p $T >/dev/null 2>$T/vg.log & local VP=$!
  for i in $(seq 150); do python3 -c "import socket;socket.create_connection(('127.0.0.1',$PORT)).close()" 2>/dev/null && break; sleep 0.2; done
  python3 - $PORT $1 <<'P'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(('127.0.0.1', port))
req = b'GET /x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n' % port
for _ in range(n):
    s.sendall(req)
    buf = b''
    while b'\r\n\r\n' not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b'\r\n\r\n')
    cl = [l for l in head.split(b'\r\n') if l.lower().startswith(b'content-length:')]
    need = int(cl[0].split(b':')[1]) if cl else 0
    while len(rest) < need:
        rest += s.recv(65536)
s.close()
P
  kill -QUIT $VP; wait $VP
  grep -E "^(summary|totals):" $T/cg.out | head -1 | awk '{print $2}'
  rm -rf $T
}

if [ "$MODE" = ir ]; then
  a=$(irrun 50); b=$(irrun 350)
  echo "$(basename $1) instructions_per_req=$(( (b - a) / 300 ))"
  exit 0
fi

T=$(mktemp -d /tmp/tsgi-njs-cost.XXXX); chmod 755 $T; cp $M $T/m.js; chmod 644 $T/m.js
PORT=$(freeport)
conf $T $PORT "user www-data; daemon off; master_process on; worker_processes 1; worker_cpu_affinity 01;"
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
