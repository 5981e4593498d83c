# A chain's links that start on a host (see relay.rs).

# bounce_relay MODE FILE TRIES START LEN COMPRESS RATE PER POLL SSH...: relays bytes
# START..START+LEN of this host's copy FILE through `bounce_ssh SSH...`. MODE receiving:
# FILE is the temporary copy still arriving, waited for (TRIES looks); installed: FILE is
# DEST; compressing: FILE is DEST, compressed on the way by COMPRESS. Prints "relay PID"
# once FILE is open, on fd 6, which is stdout.
bounce_relay() {
  _m=$1 _f=$2 _i=$3 _s=$4 _n=$5 _z=$6 _r=$7 _p=$8 _poll=$9
  shift 9
  exec 4<&0 6>&1
  bounce_watch &
  {
    exec 4<&-
    bounce_relay_open "$_m" "$_f" "$_i"
    echo "relay $$" >&6
    exec 6>&-
    # A relay that resumes a copy at an offset waits for its own copy to reach that far:
    # tail must not start past the end of what it follows.
    if [ "$_s" -gt 0 ] && [ "$_m" != compressing ]; then
      while [ "$(stat -L -c %s /dev/fd/5)" -lt "$_s" ]; do sleep 0.2; done
    fi
    # tail --pid watches this sentinel, which the far end of the pipe ends after LEN bytes.
    sleep 2147483647 > /dev/null &
    w=$!
    if [ "$_m" = compressing ]; then
      # shellcheck disable=SC2086 # COMPRESS is a command line, split into its words on purpose
      { $_z <&5 | tail -c +"$((_s + 1))"; } | { bounce_take "$_n" "$_r" "$_p"; kill $w; }
    else
      tail -c +"$((_s + 1))" -f --pid=$w -s "$_poll" /dev/fd/5 | { bounce_take "$_n" "$_r" "$_p"; kill $w; }
    fi
  } | {
    exec 4<&- 6>&-
    bounce_ssh "$@"
    s=$?
    [ $s -eq 0 ] || kill -TERM 0
    exit $s
  }
}

# bounce_relay_open MODE FILE TRIES: opens FILE on fd 5, first waiting for it to appear as a
# regular file when MODE is receiving: every 50 ms for half a second, then every 200 ms (a
# sleep is a process start on a host busy setting up others).
bounce_relay_open() {
  if [ "$1" = receiving ]; then
    i=0
    w=0.05
    until [ -f "$2" ] && [ ! -L "$2" ]; do
      i=$((i + 1))
      [ $i -le "$3" ] || { echo "no file $2 to relay" >&2; exit 1; }
      sleep $w
      [ $i -lt 10 ] || w=0.2
    done
  fi
  exec 5< "$2" || exit 1
}

# bounce_chunk_open TMP DEST: opens this host's copy on fd 3: TMP, or DEST once renamed.
# Opened once, so that a rename while chunks are read does not matter.
bounce_chunk_open() {
  f=$1
  [ -e "$f" ] || f=$2
  exec 3< "$f" || exit 1
}

# bounce_chunk_reader RATE: for each "OFFSET LENGTH" request on stdin, prints the same line
# and those bytes of the copy on fd 3; with RATE, each chunk waits its turn at that rate.
bounce_chunk_reader() {
  [ -z "$1" ] || t=$(date +%s%6N)
  while read -r off len; do
    if [ -n "$1" ]; then
      bounce_pace_wait
      t=$((t + len * 1000000 / $1))
    fi
    printf '%s %s\n' "$off" "$len"
    dd if=/dev/fd/3 bs=1M skip="$off" count="$len" iflag=skip_bytes,count_bytes status=none || exit 1
  done
}

# bounce_send_chunks TMP DEST RATE SSH...: a chain link by requests: prints its pid, then
# bounce_chunk_reader into `bounce_ssh SSH...`, whose acknowledgements come back on stdout.
# When the link dies, the reader would wait for the next request forever while the
# controller waits for an acknowledgement: the group is killed.
bounce_send_chunks() {
  echo $$
  bounce_chunk_open "$1" "$2"
  _r=$3
  shift 3
  bounce_chunk_reader "$_r" | {
    bounce_ssh "$@"
    s=$?
    [ $s -eq 0 ] || kill -TERM 0
    exit $s
  }
}
