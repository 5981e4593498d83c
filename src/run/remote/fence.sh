# A link's fence (see fence.rs): one rm of one name decides whether the link's receiving end
# or its cut got there first.

# bounce_fence_create DIR FENCE: creates FENCE empty and exclusively, DIR made first.
bounce_fence_create() {
  mkdir -p -- "$1" && umask 077 && dd if=/dev/null of="$2" conv=excl status=none
}

# bounce_fence_pass FENCE: removes FENCE, or exits 1 naming why when the link was cut first.
bounce_fence_pass() {
  rm -- "$1" 2>/dev/null || { echo "this link was cut before its receiving end started" >&2; exit 1; }
}

# bounce_fence_cut FENCE: removes FENCE and prints "cut" if it was there.
bounce_fence_cut() {
  rm -- "$1" 2>/dev/null && echo cut
}
