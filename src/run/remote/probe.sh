# What a host holds at DEST, before anything is sent (see probe.rs and sweep.sh).

# bounce_pick_hasher: sets H to the command this host hashes with, the fastest it has:
# openssl if it computes the SHA-256 of nothing right, sha256sum otherwise; says which.
bounce_pick_hasher() {
  if x=$(openssl dgst -sha256 -r < /dev/null 2>/dev/null) &&
    [ "${x%% *}" = e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ]; then
    H='openssl dgst -sha256 -r'
    echo 'hasher openssl'
  else
    H=sha256sum
    echo 'hasher sha256sum'
  fi
}

# bounce_need_tools: exits 9, naming what is missing in one line on stderr, on a host whose
# tools lack an option the jobs use (BusyBox's tail has no --pid, its tee no --output-error).
bounce_need_tools() {
  _t=
  tail -c +1 --pid=$$ -s 0.05 /dev/null > /dev/null 2>&1 || _t="$_t, tail --pid"
  tee --output-error=exit /dev/null < /dev/null > /dev/null 2>&1 || _t="$_t, tee --output-error"
  dd if=/dev/null of=/dev/null iflag=fullblock,count_bytes oflag=seek_bytes count=0 status=none > /dev/null 2>&1 ||
    _t="$_t, dd iflag=count_bytes"
  stat -L -c %s:%d:%i -- /dev/null > /dev/null 2>&1 || _t="$_t, stat -c"
  if [ -n "$_t" ]; then
    echo "this host's tools lack ${_t#, }: bounce needs GNU coreutils there" >&2
    exit 9
  fi
}

# bounce_probe_start DEST DIR GLOB STAGES MINUTES: the start of every probe: the tools are
# checked (bounce_need_tools), d is DEST, H the hasher (bounce_pick_hasher), and the stale
# temporary files are swept (bounce_sweep).
bounce_probe_start() {
  bounce_need_tools
  d=$1
  bounce_pick_hasher
  bounce_sweep "$2" "$3" "$4" "$5"
}

# bounce_probe DEST DIR GLOB STAGES MINUTES SIZE TOOL: prints one of "link", "missing",
# "size" (a regular file of another size than SIZE) or "file DIGEST". A directory at DEST
# exits 4, anything else that is not a regular file 5, and a missing TOOL 6.
bounce_probe() {
  [ -z "$7" ] || command -v "$7" > /dev/null 2>&1 || exit 6
  bounce_probe_start "$1" "$2" "$3" "$4" "$5"
  bounce_dest_kind "$d"
  case $k in
    link) echo link ;;
    dir) exit 4 ;;
    missing) echo missing ;;
    odd) exit 5 ;;
    *)
      if [ "$(stat -c %s -- "$d")" != "$6" ]; then
        echo size
      else
        # shellcheck disable=SC2086 # H is a command line, split into its words on purpose
        h=$($H < "$d") || exit 1
        echo "file ${h%% *}"
      fi
      ;;
  esac
}

# bounce_dest_kind PATH: sets k to what PATH is, never following a symlink: link, dir,
# missing, file (a regular file), or odd (anything else).
bounce_dest_kind() {
  if [ -L "$1" ]; then
    k='link'
  elif [ -d "$1" ]; then
    k='dir'
  elif [ ! -e "$1" ]; then
    k='missing'
  elif [ ! -f "$1" ]; then
    k='odd'
  else
    k='file'
  fi
}

# bounce_lacks TOOL: prints "missing" when this host has no command TOOL.
bounce_lacks() {
  command -v "$1" > /dev/null 2>&1 || echo missing
}
