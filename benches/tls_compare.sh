#!/usr/bin/env bash
# TLS, side by side: sockloop echo --tls-cert against the tokio-rustls
# baseline (examples/echo_tokio_rustls, the same rustls settings) and
# against sockloop echo without TLS, in the same interleaved rounds of
# benches/compare.sh (servers on CPU 0, the load generator on CPU 1), with
# ratios to tokio-rustls. Three loads: stream 16 KiB and pingpong 1 KiB at
# 100 connections, and handshakes (CONNS connections opened as fast as the
# bench can, each a full TLS handshake; its connecting phase is the table).
#
# Usage: benches/tls_compare.sh     ROUNDS=5 SECS=3 CONNS=2000 KEEP=dir
#   BEFORE=path adds that build of sockloop (an older one, say) to the
#   rounds as sockloop_tls_before, for a before and after in one run.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-3}
CONNS=${CONNS:-2000}
cargo build --release --quiet --bin sockloop --examples
OUT=${CARGO_TARGET_DIR:-target}/release
CERTS=$(mktemp -d)
trap 'rm -rf "$CERTS"' EXIT
"$OUT/sockloop" cert --out "$CERTS" >/dev/null
C=$CERTS/cert.pem
K=$CERTS/key.pem

export BASE=tokio_rustls
# Of compare.sh's servers only sockloop (plain) runs; these two join it.
export SKIP='^(tokio_current_thread|tokio_multi_thread|threads|epoll_floor)$'
export EXTRA="sockloop_tls|$OUT/sockloop echo --listen 127.0.0.1:0 --idle-timeout 0 --write-timeout 0 --tls-cert $C --tls-key $K|--tls --ca $C;tokio_rustls|$OUT/examples/echo_tokio_rustls 127.0.0.1:0 $C $K|--tls --ca $C"
if [ -n "${BEFORE:-}" ]; then
    EXTRA="$EXTRA;sockloop_tls_before|$BEFORE echo --listen 127.0.0.1:0 --idle-timeout 0 --write-timeout 0 --tls-cert $C --tls-key $K|--tls --ca $C"
fi

run() {
    echo
    echo "## $1"
    shift
    benches/compare.sh "$@"
}
run "stream 16 KiB, 100 connections" --conns 100 --size 16384 --mode stream --duration "${SECS}s" --warmup 1s
run "pingpong 1 KiB, 100 connections" --conns 100 --size 1024 --mode pingpong --duration "${SECS}s" --warmup 1s
run "handshakes: $CONNS connections opened at once" --conns "$CONNS" --connect-rate 1000000 --size 64 --duration 200ms --warmup 0s
