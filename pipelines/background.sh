# Sourced by the long-run scripts (pretrain_long.sh, ssl_curve.sh): start one command in the
# background, logging to <dir>/log.txt (appended), its pid in <dir>/pid; nothing if it is alive.
#   run_in_background DIR COMMAND [ARGS...]
run_in_background() {
    local dir=$1
    shift
    mkdir -p "$dir"
    if [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "already running: pid $(cat "$dir/pid") (log: $dir/log.txt)"
        return 0
    fi
    nohup "$@" >> "$dir/log.txt" 2>&1 &
    echo $! > "$dir/pid"
    echo "started: pid $! (log: $dir/log.txt)"
}
