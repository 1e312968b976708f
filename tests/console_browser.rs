//! The web console in a real browser: headless Chromium, driven over its DevTools protocol
//! by `tests/browser/console.py`, opens the console of provd's services running in this
//! process (`common::served`, on 127.96.0.1). Without credentials it gets the sign-in page;
//! signed in with the API token it goes live; while it stays open, a machine at hv1's
//! reserved address fetches its install script and reports `installing`, `post-started` and
//! `installed` with curl, and the page shows hv1 installed without a reload. The screenshot
//! is kept in `target/tmp/console.png`.
//!
//! Needs chromium and Debian's python3 with python3-websocket (lab/deps.sh); no root.

mod common;

use common::builder::SiteBuilder;
use common::served::{Served, Sockets};
use common::{Workdir, require_tools};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

#[test]
fn the_console_shows_a_host_turn_installed_live_in_chromium_and_refuses_without_credentials() {
    require_tools(&["chromium", "curl", "/usr/bin/python3"]);
    let has_websocket = Command::new("/usr/bin/python3")
        .args(["-c", "import websocket"])
        .status()
        .unwrap()
        .success();
    assert!(has_websocket, "python3-websocket is not installed: run lab/deps.sh");

    let work = Workdir::new();
    let assets = work.path("assets");
    std::fs::create_dir_all(assets.join("el9")).unwrap();
    std::fs::write(assets.join("el9/vmlinuz"), b"kernel").unwrap();
    let server = Ipv4Addr::new(127, 96, 0, 1);
    let sockets = Sockets::bind(&[("web", server)]);
    let http = sockets.http(0);
    let site = SiteBuilder::new("web", &server.to_string())
        .field(&format!("http_port = {}", http.port()))
        .listen("lo")
        .subnet("127.96.0.0/24", ("127.96.0.100", "127.96.0.150"), &[])
        .host(
            "52:54:00:00:96:01",
            "hv1",
            &["ip = \"127.96.0.11\"", "profile = \"el9\""],
        );
    let state = work.path("state");
    let text = sockets.config(&assets, &state, &[site.toml()]);
    let cfg = work.write("site.toml", &text);
    let served = Served::start(sockets, &cfg, &state);
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&shot);

    // The driver and the Chromium it starts, one process group killed on drop (pass or
    // panic): no browser outlives the test.
    let mut driver = common::ChildGuard::spawn(
        Command::new("/usr/bin/python3")
            .arg(common::repo("tests/browser/console.py"))
            .arg(format!("http://{}/console", served.api()))
            .arg(token.trim())
            .arg("hv1")
            .arg(&shot)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut lines = BufReader::new(driver.child().stdout.take().unwrap()).lines();
    let mut expect = |want: &str| -> String {
        let line = lines.next().expect("the driver ended early").unwrap();
        assert!(line.starts_with(want), "wanted {want}, the driver said: {line}");
        line
    };
    expect("REFUSED");
    let live = expect("LIVE");
    assert_eq!(live, "LIVE assigned", "hv1 before its install");
    expect("READY");

    // hv1 installs, as a kickstart would report it, from its reserved address.
    let base = format!("http://{http}");
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sf", "--interface", "127.96.0.11"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script = curl(&[&format!("{base}/boot/52-54-00-00-96-01.ipxe")]);
    let i = script.find("?token=").expect("an install script") + 7;
    let install_token: String = script[i..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    for event in ["installing", "post-started", "installed"] {
        curl(&[
            "-X",
            "POST",
            &format!("{base}/callback/hv1/{event}?token={install_token}"),
        ]);
    }
    driver.child().stdin.as_mut().unwrap().write_all(b"GO\n").unwrap();
    expect("INSTALLED");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot in {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
