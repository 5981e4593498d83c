# Whole-file hops from a host (see whole.rs). Each prints its pid first and stops its whole
# group when the controller's channel closes (bounce_guard).

# bounce_send_whole FILE COMPRESS RATE SIZE PER SSH...: sends FILE, SIZE bytes, through
# `bounce_ssh SSH...`; compressed on the way by COMPRESS (a command line) when set, paced at
# RATE bytes per second (bounce_pace) when set. No function call here is redirected (see
# bounce_watch).
bounce_send_whole() {
  echo $$
  bounce_guard
  _f=$1 _z=$2 _r=$3 _n=$4 _p=$5
  shift 5
  exec < "$_f"
  # shellcheck disable=SC2086 # COMPRESS is a command line, split into its words on purpose
  if [ -z "$_z" ] && [ -z "$_r" ]; then
    bounce_ssh "$@"
  elif [ -z "$_z" ]; then
    bounce_pace "$_r" "$_n" "$_p" | bounce_ssh "$@"
  elif [ -z "$_r" ]; then
    $_z 4<&- | bounce_ssh "$@"
  else
    $_z 4<&- | bounce_pace "$_r" "$_n" "$_p" | bounce_ssh "$@"
  fi
}

# bounce_send_part FILE START LEN RATE PER SSH...: sends bytes START..START+LEN of FILE
# through `bounce_ssh SSH...`, paced when RATE is set; a failure kills the whole group.
bounce_send_part() {
  _f=$1 _s=$2 _n=$3 _r=$4 _p=$5
  shift 5
  if [ -z "$_r" ]; then
    { dd if="$_f" bs=1M skip="$_s" count="$_n" iflag=skip_bytes,count_bytes status=none 4<&- || kill -TERM 0; } |
      bounce_ssh "$@" || kill -TERM 0
  else
    { dd if="$_f" bs=1M skip="$_s" count="$_n" iflag=skip_bytes,count_bytes status=none 4<&- || kill -TERM 0; } |
      bounce_pace "$_r" "$_n" "$_p" | bounce_ssh "$@" || kill -TERM 0
  fi
}
