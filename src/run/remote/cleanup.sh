# The end of a run on a host (see cleanup.rs).

# bounce_cleanup RUN PIDS FILE...: kills the process groups PIDS (space-separated; those
# gone are fine) and removes each FILE: a lock (.bounce-lock) only if run RUN holds it, a
# staging directory (-stage.tmp) with what it holds. Exits 1 if a file could not be
# removed, rm's message on stderr.
bounce_cleanup() {
  e=0
  _run=$1
  # shellcheck disable=SC2086 # PIDS is a list of numbers, split on purpose
  for p in $2; do kill -TERM "-$p" 2>/dev/null; done
  shift 2
  for f; do
    case $f in
      *.bounce-lock) bounce_lock_release "$f" "$_run" ;;
      *-stage.tmp) rm -rf -- "$f" || e=1 ;;
      *) rm -f -- "$f" || e=1 ;;
    esac
  done
  exit $e
}
