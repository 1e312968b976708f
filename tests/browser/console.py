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
import base64, ctypes, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request
import websocket

url, token, host, shot = sys.argv[1:5]
profile = tempfile.mkdtemp(prefix="provd-chromium-")
# A TERM (or the test ending) runs the `finally` below, which stops Chromium.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def die_with_parent():
    # PR_SET_PDEATHSIG: Chromium is killed when this driver dies, even by SIGKILL.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


chrome = subprocess.Popen(
    ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
     "--disable-background-networking", "--disable-component-update", "--disable-sync",
     "--user-data-dir=" + profile, "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)


def fail(why):
    print("FAIL " + why, flush=True)
    sys.exit(1)


try:
    port = None
    for _ in range(200):
        try:
            port = open(os.path.join(profile, "DevToolsActivePort")).read().split()[0]
            break
        except (OSError, IndexError):
            time.sleep(0.05)
    if port is None:
        fail("chromium did not start")
    for _ in range(100):
        try:
            tabs = json.load(urllib.request.urlopen("http://127.0.0.1:%s/json" % port))
            break
        except OSError:
            time.sleep(0.05)
    ws = websocket.create_connection([t for t in tabs if t["type"] == "page"][0]["webSocketDebuggerUrl"])
    seq = [0]

    class Navigated(Exception):
        """An evaluation the page's own navigation cut short (a form submit)."""

    def call(method, **params):
        seq[0] += 1
        ws.send(json.dumps({"id": seq[0], "method": method, "params": params}))
        while True:
            m = json.loads(ws.recv())
            if m.get("id") == seq[0]:
                if "error" in m:
                    if "navigated or closed" in str(m["error"].get("message", "")):
                        raise Navigated()
                    fail("%s: %s" % (method, m["error"]))
                return m["result"]

    def js(expr):
        try:
            r = call("Runtime.evaluate", expression=expr, returnByValue=True)
        except Navigated:
            fail("Runtime.evaluate: the page navigated during %s" % expr)
        return r["result"].get("value")

    def wait_for(expr, seconds):
        # Polls through navigations: the sign-in form's submit replaces the page while the
        # next poll may already be evaluating in the old one; that poll is simply "not yet".
        end = time.time() + seconds
        while time.time() < end:
            try:
                r = call("Runtime.evaluate", expression=expr, returnByValue=True)
                v = r["result"].get("value")
            except Navigated:
                v = None
            if v:
                return v
            time.sleep(0.25)
        return None

    call("Page.enable")
    call("Page.navigate", url=url)
    if not wait_for("document.readyState === 'complete' && !!document.getElementById('token')", 10):
        fail("no sign-in page without credentials: " + str(js("document.body && document.body.innerText")))
    if js("!!document.getElementById('fleet')"):
        fail("the console showed without credentials")
    print("REFUSED", flush=True)

    js("document.getElementById('token').value = %s; document.forms[0].submit()" % json.dumps(token))
    status_of = ("(() => { const r = document.querySelector('tr[data-host=%s]'); "
                 "return r ? r.children[1].textContent : null })()" % json.dumps(host))
    if not wait_for("document.getElementById('live') && document.getElementById('live').textContent === 'live'", 15):
        fail("the console did not go live")
    status = wait_for(status_of, 10)
    if not status:
        fail("%s is not in the fleet" % host)
    print("LIVE " + status, flush=True)

    js("window.provdMark = 42")
    print("READY", flush=True)
    sys.stdin.readline()
    if not wait_for(status_of + " === 'installed'", float(os.environ.get("CONSOLE_WAIT", "30"))):
        fail("%s did not turn installed (status %s)" % (host, js(status_of)))
    if js("window.provdMark") != 42:
        fail("the page was reloaded")
    png = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png["data"]))
    print("INSTALLED", flush=True)
finally:
    chrome.kill()
    chrome.wait()
    shutil.rmtree(profile, ignore_errors=True)
