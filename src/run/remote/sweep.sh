# The stale temporary files of runs that died, swept at each probe (see sweep.rs).

# bounce_sweep DIR GLOB STAGES MINUTES: removes, printing "swept PATH" for each, the files in
# DIR named GLOB and the staging directories named STAGES that are this login's, untouched
# for more than MINUTES and open in no process. The processes' list is taken before find
# starts (find holds the file it compares with open itself); stat'ing every open file can
# hang on a dead network mount, so after 10 s the check is abandoned and the file kept.
bounce_sweep() {
  _dir=$1 _glob=$2 _stages=$3 _age=$4
  s=$(find "$_dir" -mindepth 1 -maxdepth 1 -name "$_glob" -type f -user "$(id -u)" -mmin +"$_age" 2>/dev/null)
  [ -z "$s" ] || printf '%s\n' "$s" | while IFS= read -r f; do
    set -- /proc/[0-9]*/fd
    b=$(timeout -s KILL 10 find -L "$@" -mindepth 1 -maxdepth 1 -samefile "$f" -print -quit 2>/dev/null; echo ":$?")
    case $b in
      :137) ;;
      :*) rm -f -- "$f" && echo "swept $f" ;;
    esac
  done
  s=$(find "$_dir" -mindepth 1 -maxdepth 1 -name "$_stages" -type d -user "$(id -u)" -mmin +"$_age" 2>/dev/null)
  [ -z "$s" ] || printf '%s\n' "$s" | while IFS= read -r f; do
    r=$(readlink -f -- "$f") || continue
    p=$(printf '%s' "$r" | sed 's/[][*?\\]/\\&/g')
    set -- /proc/[0-9]*/fd /proc/[0-9]*/cwd
    b=$(timeout -s KILL 10 find "$@" -maxdepth 1 \( -lname "$p" -o -lname "$p/*" \) -print -quit 2>/dev/null; echo ":$?")
    case $b in
      :137) ;;
      :*) rm -rf -- "$f" && echo "swept $f" ;;
    esac
  done
}
