# Shared by the bench scripts, sourced once they are at the repository root.

# Kills process $1 (with signal $2, TERM by default) and reaps it; nothing
# if $1 is empty or already gone.
stop_pid() {
    [ -n "${1:-}" ] || return 0
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Copies $WORK to $KEEP if asked for, then removes it.
drop_work() {
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/
    fi
    rm -rf "$WORK"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts connections on 127.0.0.1:$1 (10 s at most).
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$(basename "$0" .sh): nothing listens on port $1" >&2
    return 1
}

# Starts nginx on CPU 1 serving $WORK/www/1k.bin (1 KiB of random bytes) on
# 127.0.0.1:$1, its files under $WORK/nginx; $2 holds further lines for its
# http block. Sets NGINX_PID.
start_nginx() {
    mkdir -p "$WORK/www" "$WORK/nginx"
    head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
    cat >"$WORK/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
${2:-}
    server {
        listen 127.0.0.1:$1;
        root $WORK/www;
    }
}
CONF
    taskset -c 1 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
    NGINX_PID=$!
}

# Writes to $1 the config of an HAProxy (mode tcp, one thread, maxconn
# 8000: HAProxy wants two descriptors per connection) that relays
# 127.0.0.1:$2 to 127.0.0.1:$3.
haproxy_config() {
    cat >"$1" <<CONF
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend relay
    bind 127.0.0.1:$2
    default_backend upstream
backend upstream
    server s1 127.0.0.1:$3
CONF
}
