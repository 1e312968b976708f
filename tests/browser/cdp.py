"""Headless Chromium driven over its DevTools protocol, for the console tests
(console.py, vm_console.py). One Browser per driver: Chromium is started with a private
profile and killed (with the profile removed) by close(), and by the kernel if the driver
dies (PR_SET_PDEATHSIG), so no browser outlives a test.
"""
import ctypes, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request
import websocket


def fail(why):
    print("FAIL " + why, flush=True)
    sys.exit(1)


class Navigated(Exception):
    """An evaluation the page's own navigation cut short (a form submit)."""


def _die_with_parent():
    # PR_SET_PDEATHSIG: Chromium is killed when this driver dies, even by SIGKILL.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class Browser:
    def __init__(self):
        # A TERM (or the test ending) runs the caller's `finally`, which calls close().
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        self.profile = tempfile.mkdtemp(prefix="provd-chromium-")
        self.chrome = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--user-data-dir=" + self.profile, "--remote-debugging-port=0", "--window-size=1280,900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.seq = 0
        self.events = []
        port = None
        for _ in range(200):
            try:
                port = open(os.path.join(self.profile, "DevToolsActivePort")).read().split()[0]
                break
            except (OSError, IndexError):
                time.sleep(0.05)
        if port is None:
            fail("chromium did not start")
        tabs = None
        for _ in range(100):
            try:
                tabs = json.load(urllib.request.urlopen("http://127.0.0.1:%s/json" % port))
                break
            except OSError:
                time.sleep(0.05)
        if tabs is None:
            fail("chromium's DevTools did not answer")
        page = [t for t in tabs if t["type"] == "page"][0]
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"])
        self.call("Page.enable")

    def close(self):
        self.chrome.kill()
        self.chrome.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method, **params):
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        return self.seq

    def reply(self, id):
        """The answer to request `id`; events that come first are kept in self.events."""
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == id:
                if "error" in m:
                    if "navigated or closed" in str(m["error"].get("message", "")):
                        raise Navigated()
                    fail("%s" % m["error"])
                return m["result"]
            if "method" in m:
                self.events.append(m)

    def call(self, method, **params):
        return self.reply(self.send(method, **params))

    def js(self, expr):
        try:
            r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        except Navigated:
            fail("Runtime.evaluate: the page navigated during %s" % expr)
        return r["result"].get("value")

    def wait_for(self, expr, seconds):
        # Polls through navigations: the sign-in form's submit replaces the page while the
        # next poll may already be evaluating in the old one; that poll is simply "not yet".
        end = time.time() + seconds
        while time.time() < end:
            try:
                r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
                v = r["result"].get("value")
            except Navigated:
                v = None
            if v:
                return v
            time.sleep(0.25)
        return None

    def dialog(self, seconds, answer=None):
        """Wait for the page's confirm() or prompt(), accept it (with `answer` typed into a
        prompt) and return its message."""
        end = time.time() + seconds
        while time.time() < end:
            for i, e in enumerate(self.events):
                if e["method"] == "Page.javascriptDialogOpening":
                    del self.events[i]
                    params = {"accept": True}
                    if answer is not None:
                        params["promptText"] = answer
                    self.call("Page.handleJavaScriptDialog", **params)
                    return e["params"]["message"]
            self.ws.settimeout(max(0.1, end - time.time()))
            try:
                m = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            finally:
                self.ws.settimeout(None)
            if "method" in m:
                self.events.append(m)
        fail("no dialog opened")

    def sign_in(self, url, token):
        """Open `url` without credentials (the sign-in page must show, not the console), then
        sign in with `token` and wait until the console is live."""
        self.call("Page.navigate", url=url)
        if not self.wait_for("document.readyState === 'complete' && !!document.getElementById('token')", 10):
            fail("no sign-in page without credentials: " + str(self.js("document.body && document.body.innerText")))
        if self.js("!!document.getElementById('fleet')"):
            fail("the console showed without credentials")
        print("REFUSED", flush=True)
        self.js("document.getElementById('token').value = %s; document.forms[0].submit()" % json.dumps(token))
        if not self.wait_for("document.getElementById('live') && document.getElementById('live').textContent === 'live'", 15):
            fail("the console did not go live")

    def screenshot(self, path):
        import base64
        png = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(png["data"]))
