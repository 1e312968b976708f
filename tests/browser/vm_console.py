#!/usr/bin/python3
"""Act on VMs from provd's web console in headless Chromium, for tests/pool.rs. Each action
goes through the page's own button and its confirmation (confirm() or prompt(), answered
over the DevTools protocol), as an operator would; the test checks each result on the
hypervisors with virsh.

    vm_console.py URL TOKEN SCREENSHOT

Signs in ("REFUSED" first: no console without credentials; then "LIVE"), then reads one
command per line on stdin and answers one line:

    ACTION HOST VM [ANSWER]   press ACTION on VM's row on HOST, answer a prompt with ANSWER;
                              "OK <toast>" once the row shows the result (start: running,
                              power-off: shutoff, migrate: running on ANSWER), or
                              "REFUSED <toast>" when provd refused it
    END                       save SCREENSHOT, "DONE", exit

Any failure: "FAIL <why>" and exit status 1.
"""
import json, sys
from cdp import Browser, fail

url, token, shot = sys.argv[1:4]
b = Browser()


def row(host, vm):
    return "document.querySelector('tr[data-vm=%s]')" % json.dumps(host + "/" + vm)


def state(host, vm):
    return "(() => { const r = %s; return r ? r.querySelector('.vm-state').textContent : null })()" % row(host, vm)


def vms_text():
    return b.js("document.getElementById('vms').innerText")


def act(action, host, vm, answer=None):
    b.js("document.getElementById('toast').textContent = ''")
    button = "%s.querySelector('button[data-action=%s]')" % (row(host, vm), json.dumps(action))
    if not b.wait_for("!!(%s && %s)" % (row(host, vm), button), 30):
        fail("no %s button on %s/%s: %s" % (action, host, vm, vms_text()))
    # Clicked from a timer: the evaluation returns at once, while the dialog stays open.
    b.js("setTimeout(() => %s.click(), 0); true" % button)
    b.dialog(10, answer)
    said = b.wait_for("(() => { const t = document.getElementById('toast').textContent; "
                      "return t.startsWith('done') || t.startsWith('refused') ? t : null })()", 120)
    if not said:
        fail("%s on %s/%s: no answer" % (action, host, vm))
    if said.startswith("refused"):
        return "REFUSED " + said
    shows = {
        "start": state(host, vm) + " === 'running'",
        "power-off": state(host, vm) + " === 'shutoff'",
        "migrate": "%s === 'running' && !%s" % (state(answer, vm), row(host, vm)) if answer else "true",
    }.get(action, "true")
    if b.wait_for(shows, 60) is None:
        fail("%s on %s/%s: the page does not show it: %s" % (action, host, vm, vms_text()))
    return "OK " + said


try:
    b.sign_in(url, token)
    print("LIVE", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "END":
            break
        print(act(*words), flush=True)
    b.screenshot(shot)
    print("DONE", flush=True)
finally:
    b.close()
