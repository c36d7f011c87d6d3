# shellcheck shell=bash
# Sourced by every script that starts servers on loopback ports it picks itself.
#   free_ports NAME...   sets each variable NAME to a loopback port nothing listens on: all
#                        different, and none that this run handed out before
#
# Why not one bind(0) per port, closed at once: the kernel picks each among the ~14,000 ports
# of its parity in the ephemeral range, independently, so a script's dozen picks repeat one
# about once in 250 runs (measured: 1 window of 13 in 230), and any program binding port 0
# before the caller's server starts may take it too. The server that binds second exits with
# "address already in use", and a check times out waiting for it. So each port is reserved:
# a connection to it is accepted and closed from the listening side, which leaves it in
# TIME_WAIT for a minute. The kernel does not hand a port in TIME_WAIT to bind(0), while a
# server that sets SO_REUSEADDR (redis, nginx, Go's and tokio's listeners, Python's
# http.server: every server the scripts start) binds it. The ports handed out are also
# remembered in ML_API_PORTS_HANDED_OUT (exported: scripts started from this one avoid them).
free_ports() {
  local picked name i=0
  picked="$(python3 - "$#" "${ML_API_PORTS_HANDED_OUT:-}" <<'PY'
import socket, sys
wanted, handed_out = int(sys.argv[1]), set(sys.argv[2].split())

def reserved():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            accepted.close()            # the listening side closes first: its end waits
        return str(listener.getsockname()[1])

ports = []
while len(ports) < wanted:
    port = reserved()
    if port not in handed_out and port not in ports:
        ports.append(port)
print(*ports)
PY
)" || { echo "$(basename "$0"): no free loopback ports" >&2; return 1; }
  read -r -a picked <<<"$picked"
  for name in "$@"; do printf -v "$name" %s "${picked[i++]}"; done
  ML_API_PORTS_HANDED_OUT="${ML_API_PORTS_HANDED_OUT:-} ${picked[*]}"
  export ML_API_PORTS_HANDED_OUT
}
