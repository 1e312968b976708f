#!/usr/bin/python3
"""Drive provd's web console in headless Chromium over the DevTools protocol, for
tests/console_browser.rs. Talks on stdout, one line per step; waits for a line on stdin
before it watches for the change the test makes.

    console.py URL TOKEN HOST SCREENSHOT

1. Opens URL without credentials: the sign-in page, not the console ("REFUSED").
2. Signs in with TOKEN, waits for the live stream ("LIVE <status of HOST>").
3. Marks the page, prints "READY", reads a line from stdin.
4. Waits (CONSOLE_WAIT seconds, default 30) until HOST's status cell says "installed" on
   the same page (the mark is still there: no reload), saves SCREENSHOT, prints "INSTALLED".
Any failure: "FAIL <why>" and exit status 1.
"""
import json, os, sys
from cdp import Browser, fail

url, token, host, shot = sys.argv[1:5]
b = Browser()
try:
    b.sign_in(url, token)
    status_of = ("(() => { const r = document.querySelector('tr[data-host=%s]'); "
                 "return r ? r.children[1].textContent : null })()" % json.dumps(host))
    status = b.wait_for(status_of, 10)
    if not status:
        fail("%s is not in the fleet" % host)
    print("LIVE " + status, flush=True)

    b.js("window.provdMark = 42")
    print("READY", flush=True)
    sys.stdin.readline()
    if not b.wait_for(status_of + " === 'installed'", float(os.environ.get("CONSOLE_WAIT", "30"))):
        fail("%s did not turn installed (status %s)" % (host, b.js(status_of)))
    if b.js("window.provdMark") != 42:
        fail("the page was reloaded")
    b.screenshot(shot)
    print("INSTALLED", flush=True)
finally:
    b.close()
