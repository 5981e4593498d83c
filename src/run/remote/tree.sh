# A tree, or a file sent with --sparse, put in place (see tree.rs). They need GNU tar and
# GNU find, mkfifo, and a sha256sum that has -z. DEST not a directory exits 7.

# bounce_listing START HASHED SMALL LARGE: lists START (relative to the current directory)
# as NUL-separated fields: for every entry, "E", its find type, octal mode, size, path, link
# target and inode; then, with HASHED (yes), "DIGEST  PATH" for every regular file: those under
# SMALL bytes many to a sha256sum, those over LARGE one by one with $H.
bounce_listing() {
  find "$1" -printf 'E\0%y\0%m\0%s\0%p\0%l\0%i\0' || exit 1
  [ "$2" = yes ] || return 0
  find "$1" -type f -size -"$3"c -print0 | xargs -0 -r sha256sum -z || exit 1
  export H
  # shellcheck disable=SC2016 # expanded by the sh that find starts
  find "$1" -type f -size +"$4"c -exec sh -c 'for f; do h=$($H < "$f") || exit 1; printf "%s  %s\0" "${h%% *}" "$f"; done' sh {} + || exit 1
}

# bounce_restore_old DEST DIR OLD: a DEST that is absent while a directory named OLD (a
# pattern) is in DIR is what a run killed between bounce_swap's two renames leaves: DEST's
# tree, set aside. With exactly one such directory, it is moved back to DEST and printed as
# "restored PATH"; with several (runs killed on DESTs whose names share their first 200
# bytes), none is moved and each is printed as "unrestored PATH".
bounce_restore_old() {
  if [ -e "$1" ] || [ -L "$1" ] || [ ! -d "$2" ]; then return 0; fi
  # shellcheck disable=SC2016 # expanded by the sh that find starts
  find "$2" -mindepth 1 -maxdepth 1 -type d -name "$3" -exec sh -c 'd=$1; shift; if [ $# = 1 ]; then mv -T -- "$1" "$d" && printf "restored %s\n" "$1"; else printf "unrestored %s\n" "$@"; fi' sh "$1" {} + || exit 1
}

# bounce_tree_probe DEST DIR GLOB STAGES MINUTES SHAPE TOOL NAME SMALL LARGE OLD: checks the
# tools (a missing one prints "needs TOOL" and exits 6), starts as every probe does, then
# prints "missing", or "listing" and DEST's hashed listing. SHAPE tree: DEST must be a
# directory (anything else exits 7); with OLD (not empty: the run holds DEST's lock), a
# killed run's tree set aside is first put back (bounce_restore_old). SHAPE single: DEST,
# NAME in DIR, is what the file probe accepts (a directory exits 4, anything but a file or
# a symlink 5).
bounce_tree_probe() {
  tar --version 2>/dev/null | head -n 1 | grep -q 'GNU tar' || { echo 'needs GNU tar'; exit 6; }
  if [ -n "$7" ]; then
    command -v "$7" > /dev/null 2>&1 || { echo "needs $7"; exit 6; }
  fi
  _shape=$6 _name=$8 _small=$9 _large=${10} _old=${11}
  bounce_probe_start "$1" "$2" "$3" "$4" "$5"
  if [ "$_shape" = tree ]; then
    [ -z "$_old" ] || bounce_restore_old "$d" "$2" "$_old"
    if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then
      exit 7
    elif [ ! -e "$d" ]; then
      echo missing
    else
      cd -- "$d" || exit 1
      echo listing
      bounce_listing . yes "$_small" "$_large"
    fi
  else
    bounce_dest_kind "$d"
    case $k in
      link | missing) echo missing ;;
      dir) exit 4 ;;
      odd) exit 5 ;;
      *)
        cd -- "$2" || exit 1
        echo listing
        bounce_listing "./$_name" yes "$_small" "$_large"
        ;;
    esac
  fi
}

# bounce_tar_x ARCHIVE STAGE PRESERVE: unpacks ARCHIVE into STAGE, keeping the archive's
# modes; with PRESERVE (yes) its times too, and its owners where this login is root.
bounce_tar_x() {
  if [ "$3" != yes ]; then
    tar -x -f "$1" -C "$2" --same-permissions --no-same-owner --touch
  elif [ "$(id -u)" = 0 ]; then
    tar -x -f "$1" -C "$2" --same-permissions --same-owner
  else
    tar -x -f "$1" -C "$2" --same-permissions --no-same-owner
  fi
}

# bounce_tree_link DEST STAGE SHAPE: for a tree whose DEST is a directory already (a rerun),
# fills the new STAGE with DEST's tree hard-linked (no data is copied).
bounce_tree_link() {
  [ "$3" != tree ] || [ ! -d "$1" ] || [ -L "$1" ] || cp -al -- "$1/." "$2/"
}

# bounce_behind STAGE MARK FIFO DEST SHAPE PRESERVE: starts tar in the background on FIFO,
# its job in x, unpacking into a fresh STAGE and creating MARK once it has read a whole
# archive; when STAGE cannot be made, the FIFO is drained, so the stream never waits on it.
bounce_behind() {
  rm -rf -- "$1" "$2" "$3"
  mkfifo -m 600 -- "$3" || exit 1
  (
    if mkdir -m 700 -- "$1" && bounce_tree_link "$4" "$1" "$5"; then
      bounce_tar_x "$3" "$1" "$6" && : > "$2"
    else
      cat "$3" > /dev/null
    fi
  ) > /dev/null 2>&1 &
  x=$!
}

# bounce_unpack ARCHIVE STAGE DEST SHAPE PRESERVE MARK START: unpacks the verified ARCHIVE
# into a fresh STAGE (DEST's tree hard-linked first, for a rerun), unless MARK says a
# bounce_behind already unpacked this very copy; then prints "listing" and STAGE's listing
# from START, not hashed.
bounce_unpack() {
  if [ -n "$6" ] && [ -f "$6" ]; then
    rm -f -- "$6"
  else
    rm -rf -- "$2"
    mkdir -m 700 -- "$2" && bounce_tree_link "$3" "$2" "$4" || exit 1
    bounce_tar_x "$1" "$2" "$5" || exit 1
  fi
  cd -- "$2" || exit 1
  echo listing
  bounce_listing "$7" no
}

# bounce_remove STAGE PATH...: removes each PATH, written as octal escapes for printf (so
# that any byte of a name arrives unchanged), from STAGE.
bounce_remove() {
  cd -- "$1" || exit 1
  shift
  for e; do
    # shellcheck disable=SC2059 # the format is octal escapes only, made by tree.rs
    f=$(printf "${e}x")
    rm -rf -- "${f%x}" || exit 1
  done
}

# bounce_swap STAGE OLD DEST SHAPE FSYNC NAME: makes the staged copy DEST. A tree: STAGE is
# renamed to DEST, a DEST directory first renamed aside to OLD (put back if the second
# rename fails) and removed after. A single file: STAGE/NAME renamed onto DEST. With FSYNC
# (yes), the file system is flushed first.
bounce_swap() {
  [ "$5" != yes ] || sync -f -- "$1" || exit 1
  if [ "$4" = tree ]; then
    if [ -d "$3" ] && [ ! -L "$3" ]; then
      mv -T -- "$3" "$2" || exit 1
      mv -T -- "$1" "$3" || { mv -T -- "$2" "$3"; exit 1; }
      rm -rf -- "$2"
    elif [ -e "$3" ] || [ -L "$3" ]; then
      echo "DEST $3 is no longer a directory" >&2
      exit 1
    else
      mv -T -- "$1" "$3" || exit 1
    fi
  else
    if [ -d "$3" ] && [ ! -L "$3" ]; then echo "DEST $3 is a directory" >&2; exit 1; fi
    mv -T -- "$1/$6" "$3" && rmdir -- "$1"
  fi
}
