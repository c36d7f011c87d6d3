# shellcheck shell=bash
# Sourced by every script that starts servers on loopback ports it picks itself.
#   free_ports NAME...   sets each variable NAME to a loopback port nothing listens on: all
#                        different, and none that this run handed out before
#
# Why not one bind(0) per port: the kernel picks each among the ~14,000 ports of its parity in
# the ephemeral range, independently, so a script's dozen picks repeat one about once in 250
# runs (measured: 1 window of 13 in 230). The server that binds a repeated port second exits
# with "address already in use", and a check times out waiting for it. Here one call holds all
# its sockets open until it has every port, and the ports handed out are remembered in
# ML_API_PORTS_HANDED_OUT (exported: scripts started from this one avoid them too) until the
# caller's servers have bound them.
free_ports() {
  local picked name i=0
  picked="$(python3 - "$#" "${ML_API_PORTS_HANDED_OUT:-}" <<'PY'
import socket, sys
wanted, handed_out = int(sys.argv[1]), set(sys.argv[2].split())
held, ports = [], []
while len(ports) < wanted:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)                      # held until the end: the kernel cannot pick it again
    port = str(s.getsockname()[1])
    if port not in handed_out:
        ports.append(port)
print(*ports)
PY
)" || { echo "$(basename "$0"): no free loopback ports" >&2; return 1; }
  read -r -a picked <<<"$picked"
  for name in "$@"; do printf -v "$name" %s "${picked[i++]}"; done
  ML_API_PORTS_HANDED_OUT="${ML_API_PORTS_HANDED_OUT:-} ${picked[*]}"
  export ML_API_PORTS_HANDED_OUT
}
