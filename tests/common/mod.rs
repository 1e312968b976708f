//! Shared harness for black-box tests: network namespaces, veth links, the real `provd`
//! binary started inside a namespace, and sockets opened inside a namespace.
//!
//! Every resource is a guard whose Drop removes it (kills processes, deletes namespaces),
//! so a failing assertion still cleans up. Traffic only ever goes to addresses inside the
//! namespaces a test creates.
#![allow(dead_code)]

pub mod builder;
pub mod client;
pub mod libvirtd;
pub mod served;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn provd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_provd")
}

/// Fail loudly (not skip) when the test cannot do its job: a skipped test proves nothing.
pub fn require_root_and_tools(tools: &[&str]) {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "black-box tests need root (network namespaces); run them as root"
    );
    require_tools(tools);
}

/// Fail (not skip) when a client the test drives is missing.
pub fn require_tools(tools: &[&str]) {
    for t in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            found,
            "{t} is not installed: run .ci/run or install the packages it lists"
        );
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sh(script: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(script))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (with everything in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pvt-{tag}-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns { name }
    }

    /// A command that runs inside this namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn sh(&self, script: &str) -> Output {
        run(self.cmd("sh").arg("-c").arg(script))
    }

    /// Run `f` on a thread that has entered this namespace; sockets it opens stay there.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap();
            assert_eq!(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns {path}"
            );
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside, then remove the namespace.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for p in $(ip netns pids {0} 2>/dev/null); do kill -9 $p; done; ip netns del {0}",
                self.name
            ))
            .output();
    }
}

/// A veth pair with one end in each namespace, addresses assigned and links up.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    run(Command::new("ip").args([
        "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]));
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if !addr.is_empty() {
            run(Command::new("ip").args(["-n", &ns.name, "addr", "add", addr, "dev", ifname]));
        }
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", ifname, "up"]));
    }
}

/// The usual two-namespace layout: `<tag>s` (server, `vs` = 10.N.0.1) and `<tag>c`
/// (client, `vc` = 10.N.0.2), joined by a veth, with the given prefix length.
pub fn ns_pair(tag: &str, net: u8, prefix_len: u8) -> (Netns, Netns) {
    let srv = Netns::new(&format!("{tag}s"));
    let cli = Netns::new(&format!("{tag}c"));
    veth(
        &srv,
        "vs",
        &format!("10.{net}.0.1/{prefix_len}"),
        &cli,
        "vc",
        &format!("10.{net}.0.2/{prefix_len}"),
    );
    (srv, cli)
}

/// A path in the provd source tree.
pub fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// `/etc/netns/<ns>/hosts`: `ip netns exec` bind-mounts it over /etc/hosts for that
/// namespace only. Removed on drop.
pub struct NetnsHosts(PathBuf);
impl NetnsHosts {
    pub fn new(ns: &Netns, text: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
        NetnsHosts(dir)
    }
}
impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir("/etc/netns"); // only if now empty
    }
}

/// The `[daemon]` table every test config starts with: the source tree's templates, the
/// test's assets directory, the API on the namespace's loopback.
pub fn daemon_toml(assets: &Path) -> String {
    format!(
        "[daemon]\ntemplates_dir = \"{}\"\nassets_dir = \"{}\"\napi_listen = \"127.0.0.1:6767\"\n",
        repo("templates").display(),
        assets.display()
    )
}

/// A temporary directory for one test (config, state, logs).
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::Builder::new().prefix("provd-test-").tempdir().unwrap(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// `provd serve` running inside a namespace; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    /// Byte offset in `log` where this run's lines begin.
    log_from: usize,
    pub ns: String,
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

impl Daemon {
    pub fn start(ns: &Netns, config: &Path, state_dir: &Path, log: &Path) -> Daemon {
        // A restart appends to the same log: only lines written from now on count.
        let from = std::fs::metadata(log).map(|m| m.len() as usize).unwrap_or(0);
        let logf = File::options().create(true).append(true).open(log).unwrap();
        let child = ns
            .cmd(provd_bin())
            .args(["serve", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(state_dir)
            .env("PROVD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            log: log.to_path_buf(),
            log_from: from,
            ns: ns.name.clone(),
            config: config.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
        };
        d.wait_for_log("DHCP listening", Duration::from_secs(20));
        d
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log_text().get(self.log_from..).is_some_and(|t| t.contains(needle)) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("provd exited ({status}) before {needle:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {needle:?}; log:\n{}", self.log_text());
    }

    /// provd's resident memory in KiB (VmRSS), while it runs.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// `kill -9`: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs provd, so the child pid is provd itself.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait up to `timeout` for provd to exit by itself; its exit status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM and wait: the orderly path.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run a provd client command inside the daemon's namespace; it must succeed.
    pub fn cli(&self, args: &[&str]) -> Output {
        run(&mut self.cli_command(args))
    }

    /// The same, for a command that may fail (its output either way).
    pub fn cli_output(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().unwrap()
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, provd_bin()]).args(args);
        c.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir);
        c
    }

    pub fn leases(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["leases", "list", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn stats(&self) -> serde_json::Value {
        let out = self.cli(&["stats", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- provd log ({}) ---\n{}", self.log.display(), self.log_text());
        }
    }
}

/// Poll `f` until it returns Some, or panic with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small tmpfs (e.g. "4m") on `dir`, unmounted on drop: a disk a test can fill.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "provd-test-tmpfs"])
            .arg(dir));
        Tmpfs { dir: dir.to_path_buf() }
    }

    /// Take every free byte with a filler file.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = File::create(self.dir.join("filler")).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A PEM CSR made by openssl for `cn` with a throwaway key (`newkey`, e.g. "rsa:2048").
pub fn openssl_csr(cn: &str, newkey: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            newkey,
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// curl with `args` inside `ns`: the body and the HTTP status ("000" when nothing
/// answered).
pub fn curl_status(ns: &Netns, args: &[&str]) -> (String, String) {
    let out = ns
        .cmd("curl")
        .args(["-s", "-o", "/dev/stdout", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.to_string())
}

/// One DHCP lease for `iface` in `ns` (busybox udhcpc, one shot), which must be `ip`; then
/// `ip`/24 on the interface (added once: a second lease keeps it).
pub fn udhcpc_lease(ns: &Netns, iface: &str, ip: &str) {
    let out = ns
        .cmd("busybox")
        .args([
            "udhcpc",
            "-i",
            iface,
            "-n",
            "-q",
            "-f",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("lease of {ip} obtained")), "udhcpc: {said}");
    let _ = ns
        .cmd("ip")
        .args(["addr", "add", &format!("{ip}/24"), "dev", iface])
        .output();
}

/// `provd ARGS` outside any namespace (pki init, issue-client): must succeed.
pub fn provd_ok(args: &[&str]) {
    let out = Command::new(provd_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "provd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A number from perfdhcp's report: the value of the line starting with `name` in the
/// section headed `section` (e.g. "REQUEST-ACK", "drops").
pub fn perfdhcp_field(text: &str, section: &str, name: &str) -> u64 {
    let s = &text[text.find(section).unwrap_or_else(|| panic!("no {section} in:\n{text}"))..];
    let line = s
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} under {section} in:\n{text}"));
    line.split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line:?} holds no number"))
}

/// A process a test started, in its own process group: on drop (success, failure or panic)
/// the whole group is killed and reaped, so nothing the test started outlives it.
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Spawn `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        use std::os::unix::process::CommandExt;
        let child = cmd.process_group(0).spawn().unwrap();
        ChildGuard { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the process has ended (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // The group's id is the leader's pid (process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
