#!/usr/bin/python3
"""Drive the region's web console in headless Chromium over the DevTools protocol, for
tests/region.rs. Talks on stdout, one line per step; waits for a line on stdin before it
watches for the change the test makes.

    region_console.py URL TOKEN SCREENSHOT

1. Opens URL without credentials: the sign-in page, not the console ("REFUSED").
2. Signs in with TOKEN; waits until both sites, dca and dcb, show "fresh" ("LIVE").
3. Picks site dcb in the site filter: only dcb's row and hosts remain, hvb1 among them
   ("FILTERED").
4. Marks the page, prints "READY", reads a line from stdin.
5. Waits (CONSOLE_WAIT seconds, default 90) until dcb's row says "stale" on the same page
   (no reload) and the region CRL dcb held is shown, saves SCREENSHOT, prints "STALE".
Any failure: "FAIL <why>" and exit status 1.
"""
import json, os, sys
from cdp import Browser, fail

url, token, shot = sys.argv[1:4]
b = Browser()
try:
    b.call("Page.navigate", url=url)
    if not b.wait_for("document.readyState === 'complete' && !!document.getElementById('token')", 10):
        fail("no sign-in page without credentials: " + str(b.js("document.body && document.body.innerText")))
    if b.js("!!document.getElementById('sites')"):
        fail("the console showed without credentials")
    print("REFUSED", flush=True)
    b.js("document.getElementById('token').value = %s; document.forms[0].submit()" % json.dumps(token))
    health = ("(() => { const r = document.querySelector('#sites tr[data-site=%s]'); "
              "return r ? r.children[1].textContent : null })()")
    both_fresh = "%s === 'fresh' && %s === 'fresh'" % (health % json.dumps("dca"), health % json.dumps("dcb"))
    if not b.wait_for(both_fresh, 20):
        fail("the sites are not both fresh: " + str(b.js("document.querySelector('#sites') && document.querySelector('#sites').innerText")))
    print("LIVE", flush=True)

    b.js("const f = document.getElementById('site-filter'); f.value = 'dcb'; f.dispatchEvent(new Event('change'))")
    only_dcb = ("(() => { const sites = [...document.querySelectorAll('#sites tbody tr')].map(r => r.dataset.site); "
                "const hosts = [...document.querySelectorAll('#hosts tbody tr')]; "
                "return sites.join() === 'dcb' && hosts.length > 0 "
                "&& hosts.every(r => r.children[0].textContent === 'dcb') "
                "&& hosts.some(r => r.dataset.host === 'hvb1') })()")
    if not b.wait_for(only_dcb, 10):
        fail("the filter did not leave dcb alone: " + str(b.js("document.querySelector('main').innerText")))
    print("FILTERED", flush=True)

    b.js("window.provdMark = 42")
    print("READY", flush=True)
    sys.stdin.readline()
    if not b.wait_for(health % json.dumps("dcb") + " === 'stale'", float(os.environ.get("CONSOLE_WAIT", "90"))):
        fail("dcb did not turn stale (health %s)" % b.js(health % json.dumps("dcb")))
    if b.js("window.provdMark") != 42:
        fail("the page was reloaded")
    # The region's revocation list dcb held before the cut (a CRL number, not "-").
    crl = b.js("(() => { const c = document.querySelector('#sites tr[data-site=dcb] td.crl'); "
               "return c ? c.textContent : null })()")
    if not (crl or "").isdigit():
        fail("dcb's region CRL is not shown: %r" % crl)
    b.screenshot(shot)
    print("STALE", flush=True)
finally:
    b.close()
