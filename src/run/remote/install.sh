# Putting a copy in place (see install.rs). A digest mismatch exits 3.

# bounce_install TMP DEST DIR MODE OWNER MODE_NOT_ROOT DATE FSYNC: gives TMP its mode (with
# OWNER, "+UID:+GID": SRC's owner where this login is root, MODE_NOT_ROOT otherwise, then
# the modification time DATE) and renames it onto DEST with one rename(2) (mv -T), flushing
# it first and DIR after when FSYNC is yes.
bounce_install() {
  {
    if [ -z "$5" ]; then
      chmod "$4" -- "$1"
    elif [ "$(id -u)" = 0 ]; then
      chown -- "$5" "$1" && chmod "$4" -- "$1" && touch -c -m -d "$7" -- "$1"
    else
      chmod "$6" -- "$1" && touch -c -m -d "$7" -- "$1"
    fi
  } && if [ "$8" = yes ]; then
    sync -- "$1" && mv -T -f -- "$1" "$2" && sync -- "$3"
  else
    mv -T -f -- "$1" "$2"
  fi
}

# bounce_verify TMP DIGEST HASH: hashes TMP; a mismatch removes it, prints what was found
# and exits 3.
bounce_verify() {
  # shellcheck disable=SC2086 # HASH is a command line, split into its words on purpose
  h=$($3 < "$1") || exit 1
  h=${h%% *}
  if [ "$h" != "$2" ]; then rm -f -- "$1"; echo "$h"; exit 3; fi
}

# bounce_verify_decoded DIR TMP DEC DECFILE DIGEST HASH: decompresses TMP with DEC into
# DECFILE (emptied first, or created exclusively) and checks what came out; a mismatch, or
# a copy that does not decompress, removes both, prints what was found and exits 3.
bounce_verify_decoded() {
  bounce_renew6 "$1" "$4"
  # shellcheck disable=SC2086 # DEC and HASH are command lines, split on purpose
  h=$($3 < "$2" | { tee --output-error=exit -- /dev/fd/6 || kill -TERM $$; } | $6) || exit 1
  h=${h%% *}
  exec 6>&-
  if [ "$h" != "$5" ]; then rm -f -- "$2" "$4"; echo "$h"; exit 3; fi
}

# bounce_check DEST DIGEST HASH: an installed copy checked again; a mismatch prints what was
# found and exits 3.
bounce_check() {
  # shellcheck disable=SC2086 # HASH is a command line, split into its words on purpose
  h=$($3 < "$1") || exit 1
  h=${h%% *}
  [ "$h" = "$2" ] || { echo "$h"; exit 3; }
}

# bounce_then COMMAND DEST LINES BYTES MARK: runs the user's COMMAND with sh -c, $1 being
# DEST, stdin from /dev/null and stderr into stdout; keeps its last LINES lines (BYTES at
# most), then MARK and its exit status on a line of their own.
bounce_then() {
  {
    sh -c "$1" bounce-then "$2" < /dev/null 2>&1
    s=$?
    printf '\n%s%d\n' "$5" "$s"
  } | tail -n "$3" | tail -c "$4"
}
