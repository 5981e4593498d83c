# The pieces several remote jobs share (see mod.rs for how this library reaches a host).
# Lines reach a host trimmed and without comments, so no quoted string here spans two lines.

# bounce_create_excl DIR FILE FD: creates FILE exclusively (mode 0600, DIR made first) and
# opens it read-write on descriptor FD (3 or 6); exits 1 if anything is already there.
# dd's conv=excl opens with O_CREAT|O_EXCL, which never follows a symlink nor opens a FIFO
# or a device (the shell's set -C would); the descriptor is then checked to be a file.
bounce_create_excl() {
  mkdir -p -- "$1" && umask 077 && dd if=/dev/null of="$2" conv=excl status=none || exit 1
  case $3 in
    3) exec 3<> "$2" ;;
    6) exec 6<> "$2" ;;
  esac && [ -f "/dev/fd/$3" ] || exit 1
}

# bounce_refuse_odd FILE: exits 1, naming FILE, when a symlink or anything but a regular file
# is at its name.
bounce_refuse_odd() {
  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -f "$1" ]; }; then
    echo "refusing to write through $1: not a regular file" >&2
    exit 1
  fi
}

# bounce_renew6 DIR FILE: FILE emptied and opened for writing on descriptor 6, or created
# exclusively there when missing; anything odd at its name is refused.
bounce_renew6() {
  bounce_refuse_odd "$2"
  if [ -e "$2" ]; then
    umask 077 && exec 6> "$2" || exit 1
  else
    bounce_create_excl "$1" "$2" 6
  fi
}

# bounce_report_size FILE: prints "at N", the size of FILE, twice a second; run in the
# background and killed when its job ends.
bounce_report_size() {
  while sleep 0.5 > /dev/null 2>&1; do echo "at $(stat -c %s -- "$1")"; done
}

# bounce_report_blocks FILE: bounce_report_size, N being the bytes FILE holds on disk (its
# parts are written at different offsets, so its size says nothing).
bounce_report_blocks() {
  while sleep 0.5 > /dev/null 2>&1; do echo "at $(($(stat -c '%b * %B' -- "$1")))"; done
}

# bounce_watch: reads descriptor 4, a copy of the controller's channel, to its end, then
# kills this job's process group, so that no job goes on unattended once the controller or
# its connection is gone. Started as `bounce_watch &`, with no redirection: a shell that
# redirects a function call keeps copies of the descriptors it replaced (stdout among
# them) for as long as the function runs. (An asynchronous list's stdin is /dev/null, and
# dash applies that before <&0: hence descriptor 4.)
bounce_watch() {
  exec <&4 > /dev/null 2>&1 4<&- 6>&-
  cat
  kill -TERM 0
}

# bounce_guard: keeps stdin on descriptor 4 and starts bounce_watch on it.
bounce_guard() {
  exec 4<&0
  bounce_watch &
}

# bounce_tee_to FD: copies stdin to stdout and to descriptor FD; a failed write (a full
# disk) kills the job's process group at once, the cause on stderr.
bounce_tee_to() {
  tee --output-error=exit -- "/dev/fd/$1" || kill -TERM 0
}

# bounce_decode CMD: decompresses stdin with CMD (a fixed command line from codec.rs),
# writing the result to descriptor 6 and to stdout. A truncated or corrupt input ends CMD
# early; the rest is drained, so the stage before is not killed by a closed pipe, and the
# digest of what came out tells the copy is wrong.
bounce_decode() {
  # shellcheck disable=SC2086 # CMD is a command line, split into its words on purpose
  { $1; cat > /dev/null; } | bounce_tee_to 6
}

# bounce_pace_wait: sleeps until $t, a deadline in microseconds since the epoch; a deadline
# already past moves to now, so that a sender held up by its input earns no burst after.
bounce_pace_wait() {
  d=$((t - $(date +%s%6N)))
  if [ $d -gt 0 ]; then
    sleep "$((d / 1000000)).$(printf %06d $((d % 1000000)))"
  else
    t=$((t - d))
  fi
}

# bounce_pace RATE TOTAL PER: passes the first TOTAL bytes of stdin at RATE bytes per second
# at most: one dd moves PER bytes (a period's worth), then the loop sleeps until that
# period's deadline.
bounce_pace() {
  t=$(date +%s%6N)
  l=$2
  while [ "$l" -gt 0 ]; do
    n=$3
    [ "$n" -le "$l" ] || n=$l
    dd bs=1M count="$n" iflag=fullblock,count_bytes status=none || exit 1
    l=$((l - n))
    t=$((t + n * 1000000 / $1))
    bounce_pace_wait
  done
}

# bounce_take LEN RATE PER: passes the first LEN bytes of stdin, paced (bounce_pace) when
# RATE is set.
bounce_take() {
  if [ -z "$2" ]; then
    head -c "$1"
  else
    bounce_pace "$2" "$1" "$3"
  fi
}
