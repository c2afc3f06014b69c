"""Network probe for the CI stand-in: try a TCP connection and print what happened.

``blocked`` means the kernel refused to send (EPERM: a cgroup IP filter or firewall);
``refused``/``connected``/``timeout`` mean the packet left. Run with no arguments by
clinicam-probe-net.service (inside the sandbox), or with HOST PORT as a control.
"""

from __future__ import annotations

import errno
import socket
import sys


def attempt(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=5):
            return "connected"
    except PermissionError:
        return "blocked"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return "blocked" if exc.errno == errno.EPERM else f"error-{exc.errno}"


def main(argv: list[str]) -> None:
    if len(argv) == 2:
        print(attempt(argv[0], int(argv[1])))
        return
    for host, port in (("10.0.2.2", 8883), ("127.0.0.1", 9)):
        print(f"PROBE connect:{host}:{port} {attempt(host, port)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
