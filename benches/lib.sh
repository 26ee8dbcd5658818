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
