#!/usr/bin/python3
"""Run a command on the lab switch's shell (its second serial port, a unix socket QEMU
serves) and print what it printed; exits with the command's status. iproute2 is
/usr/sbin/ip and /usr/sbin/bridge there (a bare `ip` is busybox's applet).
    lab/switch.py [--socket PATH] 'cat /proc/net/bonding/bond1'
The shell does not echo; a marker with the status ends each answer."""
import socket
import sys
import time

def main() -> int:
    args = sys.argv[1:]
    path = "/var/lib/provd-lab/switch/console.sock"
    if len(args) >= 2 and args[0] == "--socket":
        path, args = args[1], args[2:]
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    marker = "__PROVD_SWITCH_DONE__"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(60)
    # The marker is printed by the shell, split in the command so that no echo could
    # contain it whole.
    # A status: the exit code of the command itself (the `echo` runs after it).
    command = "%s\n__s=$?; echo; echo \"%s\"\"%s:$__s\"\n" % (args[0], marker[:8], marker[8:])
    s.sendall(command.encode())
    data = b""
    deadline = time.time() + 60
    # Done once the marker and its status line have come back whole.
    while marker.encode() not in data or b"\n" not in data[data.find(marker.encode()):]:
        if time.time() > deadline:
            print("no answer from the switch shell", file=sys.stderr)
            return 3
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    text = data.decode(errors="replace").replace("\r", "")
    body, _, tail = text.partition(marker)
    status = int(tail.split(":", 1)[1].split()[0]) if ":" in tail else 1
    body = body[:-1] if body.endswith("\n") else body
    sys.stdout.write(body)
    return status

if __name__ == "__main__":
    sys.exit(main())
