# The receiving ends of every transfer (see receive.rs). Each prints its own pid first, once
# its file exists: sshd runs each command in a session of its own, so that pid is also the
# process group the controller kills to stop the job.

# bounce_receive_chunks DIR TMP: reads "OFFSET LENGTH" lines, each followed by LENGTH bytes,
# writes them at OFFSET into TMP and answers "ok OFFSET" once they are on disk. One dd per
# chunk reads exactly LENGTH bytes; its own count, read in the C locale, proves the chunk.
bounce_receive_chunks() {
  echo $$
  bounce_refuse_odd "$2"
  if [ -e "$2" ]; then
    exec 3<> "$2" && [ -f /dev/fd/3 ] || exit 1
  else
    bounce_create_excl "$1" "$2" 3
  fi
  while read -r off len; do
    r=$(LC_ALL=C dd of=/dev/fd/3 bs=1M iflag=fullblock,count_bytes count="$len" seek="$off" oflag=seek_bytes conv=notrunc 2>&1) ||
      { printf '%s\n' "$r" | head -n 1 >&2; exit 1; }
    n=${r##*records out}
    n=${n#?}
    n=${n%% *}
    [ "$n" = "$len" ] || { echo "short chunk at $off" >&2; exit 1; }
    echo "ok $off"
  done
}

# bounce_receive_stream DIR TMP HASH DEC DECFILE STAGE MARK FIFO DEST SHAPE PRESERVE:
# receives one stream on stdin into TMP, hashing it with HASH on the way; prints "at N"
# twice a second and, at its end, "end N DIGEST". With DEC, what is hashed is the stream
# decompressed into DECFILE; with STAGE, it is also unpacked as it arrives (bounce_behind).
bounce_receive_stream() {
  bounce_create_excl "$1" "$2" 3
  [ -z "$4" ] || bounce_create_excl "$1" "$5" 6
  [ -z "$6" ] || bounce_behind "$6" "$7" "$8" "$9" "${10}" "${11}"
  echo $$
  bounce_report_size "$2" &
  p=$!
  _h=$3 _z=$4 _fifo=$8
  # shellcheck disable=SC2086 # HASH is a command line, split into its words on purpose
  if [ -z "$_z" ] && [ -z "$_fifo" ]; then
    h=$(bounce_tee_to 3 | $_h)
  elif [ -z "$_fifo" ]; then
    h=$(bounce_tee_to 3 | bounce_decode "$_z" | $_h)
  elif [ -z "$_z" ]; then
    h=$(bounce_tee_to 3 | tee --output-error=exit-nopipe -- "$_fifo" | $_h)
  else
    h=$(bounce_tee_to 3 | bounce_decode "$_z" | tee --output-error=exit-nopipe -- "$_fifo" | $_h)
  fi
  kill "$p" 2>/dev/null
  [ -z "$_fifo" ] || wait "$x"
  echo "end $(stat -c %s -- "$2") ${h%% *}"
}

# bounce_resume_stream DIR TMP OFFSET SIZE HASH DEC DECFILE: continues a stream into TMP,
# which holds exactly OFFSET bytes of this run's copy: appends stdin to it, and hashes the
# whole copy, SIZE bytes, by following it from its start as it grows. Prints what
# bounce_receive_stream prints. With DEC, the whole copy is decompressed again into DECFILE.
bounce_resume_stream() {
  if [ -L "$2" ] || [ ! -f "$2" ]; then echo "no copy to resume at $2" >&2; exit 1; fi
  exec 3<> "$2" && [ -f /dev/fd/3 ] || exit 1
  n=$(stat -c %s -- "$2")
  [ "$n" = "$3" ] || { echo "the copy at $2 holds $n bytes, not $3" >&2; exit 1; }
  [ -z "$6" ] || bounce_renew6 "$1" "$7"
  echo $$
  bounce_report_size "$2" &
  p=$!
  exec 4<&0
  { cat <&4 >> /dev/fd/3 || kill -TERM 0; } &
  w=$!
  exec 4<&-
  _n=$4 _h=$5 _z=$6
  # shellcheck disable=SC2086 # HASH is a command line, split into its words on purpose
  if [ -z "$_z" ]; then
    h=$(tail -c +1 -f --pid=$w -s 0.05 /dev/fd/3 | head -c "$_n" | $_h)
  else
    h=$(tail -c +1 -f --pid=$w -s 0.05 /dev/fd/3 | head -c "$_n" | bounce_decode "$_z" | $_h)
  fi
  wait $w
  kill "$p" 2>/dev/null
  echo "end $(stat -c %s -- "$2") ${h%% *}"
}

# bounce_copy_length TMP: prints the size of TMP when it is a regular file of this run's.
bounce_copy_length() {
  if [ -f "$1" ] && [ ! -L "$1" ]; then stat -c %s -- "$1"; fi
}

# bounce_create_for_parts DIR TMP: creates TMP exclusively and prints its identity,
# DEVICE:INODE, which each part's receiver checks before it writes.
bounce_create_for_parts() {
  bounce_create_excl "$1" "$2" 3
  stat -L -c %d:%i /dev/fd/3
}

# bounce_receive_part TMP FILE INDEX OFFSET HASH REPORT: receives part INDEX on stdin and
# writes it at OFFSET into TMP, but only if TMP opens to FILE (DEVICE:INODE), a regular file
# of this login's; prints "part INDEX DIGEST" at its end and, with REPORT (yes), "at N".
bounce_receive_part() {
  if [ -L "$1" ] || [ ! -f "$1" ]; then echo "no copy at $1 to write part $3 into" >&2; exit 1; fi
  # Opened for reading, which creates nothing; dd opens it again through /dev/fd/3 to write,
  # which reaches the same file whatever is at the name by then.
  exec 3< "$1" || exit 1
  if [ "$(stat -L -c %d:%i /dev/fd/3)" != "$2" ] || [ ! -O /dev/fd/3 ]; then
    echo "refusing to write part $3 into $1: not the copy this run made" >&2
    exit 1
  fi
  echo $$
  if [ "$6" = yes ]; then
    bounce_report_blocks "$1" &
    p=$!
  fi
  _o=$4 _h=$5
  # tee hands each block to the hasher and, through fd 7, to dd, which writes it at the
  # part's offset (tee cannot seek); the digest comes back on fd 8.
  # shellcheck disable=SC2086 # HASH is a command line, split into its words on purpose
  h=$( { { { tee --output-error=exit -- /dev/fd/7 || kill -TERM 0; } | $_h >&8 7>&-; } 7>&1 |
    { dd of=/dev/fd/3 bs=1M seek="$_o" oflag=seek_bytes conv=notrunc status=none 8>&- || kill -TERM 0; }; } 8>&1 )
  [ "$6" != yes ] || kill "$p" 2>/dev/null
  echo "part $3 ${h%% *}"
}
