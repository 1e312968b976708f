#!/usr/bin/python3
"""Print the pids of processes that carry PROVD_TEST_SUITE=<mark> in their environment and
are not descendants of process <root> (lab/test.sh, whose own helpers are still running):
what the test suite started and left behind.

    survivors.py MARK ROOT
"""
import os, sys

mark, root = sys.argv[1].encode(), int(sys.argv[2])
want = b"PROVD_TEST_SUITE=" + mark


def stat(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        text = f.read()
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    rest = text[text.rindex(b")") + 2:].split()
    return rest[0], int(rest[1])


def descends_from(pid, ancestor):
    seen = 0
    while pid > 1 and seen < 4096:
        if pid == ancestor:
            return True
        try:
            pid = stat(pid)[1]
        except (OSError, ValueError, IndexError):
            return False
        seen += 1
    return False


for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    pid = int(entry)
    try:
        state, _ = stat(pid)
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        continue
    if state == b"Z" or want not in env or descends_from(pid, root):
        continue
    print(pid)
