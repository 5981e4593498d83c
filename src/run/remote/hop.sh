# The ssh a host runs to reach the next one (see hop.rs).

# bounce_ssh STRICT TIMEOUT PORT USER HOST CIPHERS COMMAND: runs COMMAND on HOST. It asks
# for CIPHERS when this CPU has AES instructions and this host's ssh configuration leaves
# the ciphers at OpenSSH's default (ssh -G says the same with and without it); a
# configuration that names ciphers is obeyed. PORT and USER may be empty. The ssh does
# not hold descriptor 4, a job's copy of the controller's channel (see bounce_watch).
bounce_ssh() {
  _c=
  if grep -qw aes /proc/cpuinfo 2>/dev/null &&
    [ "$(ssh -G -- "$5" 2>/dev/null | grep '^ciphers ')" = "$(ssh -F /dev/null -G -- "$5" 2>/dev/null | grep '^ciphers ')" ]; then
    _c=-oCiphers=$6
  fi
  ssh ${_c:+"$_c"} -T -x -o BatchMode=yes -o StrictHostKeyChecking="$1" -o ConnectTimeout="$2" \
    -o ServerAliveInterval=2 -o ServerAliveCountMax=3 ${3:+-p "$3"} ${4:+-l "$4"} -- "$5" "$7" 4<&-
}
