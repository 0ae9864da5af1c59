# Background processes tracked by PID files. Source after common.sh.
# Needs PIDS_DIR and LOGS_DIR set by the caller.
# shellcheck shell=bash

# start_bg NAME CMD...: starts CMD detached (own session, no stdin), logging
# to $LOGS_DIR/NAME.log, and records its PID in $PIDS_DIR/NAME.pid. Extra
# environment goes in front as with env(1): start_bg pebble env A=1 pebble ...
start_bg() {
  local name=$1; shift
  mkdir -p "$PIDS_DIR" "$LOGS_DIR"
  log "starting $name: $(printf '%q ' "$@")"
  # The script runs without job control, so the child is not a process-group
  # leader and setsid(1) calls setsid() and execs without forking: $! is the
  # PID of the real program.
  setsid "$@" >"$LOGS_DIR/$name.log" 2>&1 </dev/null &
  # Keep the start time with the PID so a reused PID is never mistaken for
  # ours (and never signalled).
  echo "$! $(proc_stat "$!" | cut -d' ' -f2)" >"$PIDS_DIR/$name.pid"
}

# proc_stat PID: prints "STATE STARTTIME" of a process (fields 3 and 22 of
# /proc/PID/stat; start time in clock ticks since boot), nothing if gone.
proc_stat() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }          # drop "pid (comm) ", comm may hold spaces
  # shellcheck disable=SC2086
  set -- $stat               # now $1 is field 3 (state), field 22 is $20
  printf '%s %s\n' "$1" "${20}"
}

# pid_of NAME: prints the recorded PID (nothing if no pid file).
pid_of() {
  local f="$PIDS_DIR/$1.pid"
  [ -f "$f" ] && cut -d' ' -f1 "$f"
  return 0
}

# is_alive NAME: true when NAME's recorded PID runs, is the very process we
# started (same start time), and is not a zombie.
is_alive() {
  local f="$PIDS_DIR/$1.pid" pid started now state
  [ -f "$f" ] || return 1
  read -r pid started <"$f" || return 1
  [ -n "$pid" ] || return 1
  read -r state now < <(proc_stat "$pid") || return 1
  [ "$now" = "$started" ] && [ "$state" != Z ]
}

# stop_all NAME...: TERM every named process that is alive, waits up to 10s
# for all of them, KILLs what is left, and removes the pid files.
stop_all() {
  local name pid left deadline=$((SECONDS + 10))
  for name in "$@"; do
    if is_alive "$name"; then
      pid=$(pid_of "$name")
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  while :; do
    left=()
    for name in "$@"; do is_alive "$name" && left+=("$name"); done
    [ "${#left[@]}" -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      for name in "${left[@]}"; do
        pid=$(pid_of "$name")
        log "killing $name (pid $pid) after 10s"
        kill -KILL "$pid" 2>/dev/null || true
      done
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  # Exited processes stay zombies until their parent (init, since `up` has
  # exited) reaps them; give it a moment so `ps` right after shows nothing.
  deadline=$((SECONDS + 3))
  for name in "$@"; do
    pid=$(pid_of "$name")
    while [ -n "$pid" ] && [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.1
    done
  done
  for name in "$@"; do rm -f "$PIDS_DIR/$name.pid"; done
}
