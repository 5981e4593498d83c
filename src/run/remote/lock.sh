# One run per DEST per host (see lock.rs). Another run's live lock exits 8.

# bounce_lock_take LOCK DIR ME RUN BOOT LIVE MINUTES: takes LOCK (mkdir) for the owner line
# ME of run RUN; prints "lock taken", "lock swept LINE" (a stale lock removed, then taken),
# "lock none" (something else at its name, or DIR not writable), or "lock held LINE" and
# exits 8. A lock is stale when no process here names its run, and either it is older than
# MINUTES or it was taken on boot BOOT by a process not among LIVE (pids, space-separated).
bounce_lock_take() {
  l=$1 _me=$3 _run=$4 _boot=$5 _live=$6 _age=$7
  mkdir -p -- "$2" 2>/dev/null
  if mkdir -- "$l" 2>/dev/null; then
    bounce_lock_write "$l" "$_me"
    echo 'lock taken'
  elif [ -d "$l" ] && [ ! -L "$l" ]; then
    o=$(head -n 1 -- "$l/owner" 2>/dev/null)
    # The owner line is split with globbing off; each field is checked before use.
    set -f
    # shellcheck disable=SC2086 # the owner line, split into its fields on purpose
    set -- $o
    set +f
    r=${1-} p=${3-} b=${4-}
    case $r in *[!0-9A-Za-z]*) r= ;; esac
    case $p in '' | *[!0-9]*) p=x ;; esac
    dead=no
    if [ "$b" = "$_boot" ]; then
      case " $_live " in *" $p "*) ;; *) dead=yes ;; esac
    fi
    # The run id goes to grep as a bracket expression ([a]bc), so that grep's own command
    # line, which /proc shows too, does not match it.
    if [ -n "$r" ] && [ "$r" = "$_run" ]; then
      echo 'lock taken'
    elif { [ $dead = yes ] || [ -n "$(find "$l" -maxdepth 0 -mmin +"$_age" 2>/dev/null)" ]; } &&
      { [ -z "$r" ] || ! grep -qsa -- "bounce-[${r%"${r#?}"}]${r#?}-" /proc/[0-9]*/cmdline; } &&
      rm -rf -- "$l" && mkdir -- "$l" 2>/dev/null; then
      bounce_lock_write "$l" "$_me"
      echo "lock swept $o"
    else
      echo "lock held $o"
      exit 8
    fi
  else
    echo 'lock none'
  fi
}

# bounce_lock_write LOCK ME: writes the owner line, ME and the time, into LOCK.
bounce_lock_write() {
  printf '%s %s\n' "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$1/owner" 2>/dev/null
}

# bounce_lock_release LOCK RUN: removes LOCK if run RUN holds it; always succeeds.
bounce_lock_release() {
  if [ -d "$1" ] && [ ! -L "$1" ]; then
    o=$(head -n 1 -- "$1/owner" 2>/dev/null)
    [ "${o%% *}" = "$2" ] && rm -rf -- "$1"
  fi
  true
}
