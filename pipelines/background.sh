# Sourced by the long-run scripts (pretrain_long.sh, ssl_curve.sh): start one command in the
# background, logging to <dir>/log.txt (appended), its pid in <dir>/pid; nothing if it is alive.
#   run_in_background DIR COMMAND [ARGS...]
#   is_running DIR      # true while the command started for DIR is alive
is_running() {
    local pid
    [[ -f $1/pid ]] || return 1
    pid=$(cat "$1/pid")
    kill -0 "$pid" 2>/dev/null || return 1
    # an exited process nobody has reaped yet (a container without an init) is a zombie: not running
    [[ ! -r /proc/$pid/stat || $(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1) != Z ]]
}

run_in_background() {
    local dir=$1
    shift
    mkdir -p "$dir"
    if is_running "$dir"; then
        echo "already running: pid $(cat "$dir/pid") (log: $dir/log.txt)"
        return 0
    fi
    # its own session: a closed shell or tool does not take it along. Without job control (set +m), so
    # the job is no process-group leader and setsid runs it in place: $! is the job, not a setsid that
    # forked and exited (what a shell with job control, one that sourced this file, would get)
    ( set +m; setsid nohup "$@" >> "$dir/log.txt" 2>&1 & echo $! > "$dir/pid" )
    echo "started: pid $(cat "$dir/pid") (log: $dir/log.txt)"
}
