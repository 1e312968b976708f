//! The fleet storm: N simulated machines power on at once and walk the whole network-boot
//! chain as real ones do, each with its own MAC and (leased) address:
//!
//!   DHCP as the PXE ROM -> TFTP of the first-stage file -> DHCP as iPXE -> the per-host
//!   script over HTTP -> kernel and initrd -> the kickstart (time-to-kickstart) -> the
//!   installer's callbacks, installing, post-started, installed (time-to-installed)
//!
//! Against a static baseline (Kea + tftpd-hpa + nginx, lab/bench/storm.sh) the same walk
//! ends at the kickstart: a static kickstart has no callbacks.
//!
//!   provd-storm --machines N [--spread-ms MS] [--mac-prefix 52:54:01] [--json]
//!
//! Runs inside the client namespace storm.sh makes (it needs port 68 and the pool's
//! addresses on its interface). Prints percentiles per stage and every failure's reason.

mod dhcp;
mod http;
mod tftp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Options {
    machines: u32,
    spread: Duration,
    mac_prefix: [u8; 3],
    json: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        machines: 500,
        spread: Duration::from_millis(1000),
        mac_prefix: [0x52, 0x54, 0x01],
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--machines" => o.machines = value()?.parse().map_err(|e| format!("--machines: {e}"))?,
            "--spread-ms" => {
                o.spread = Duration::from_millis(value()?.parse().map_err(|e| format!("--spread-ms: {e}"))?)
            }
            "--mac-prefix" => {
                let v = value()?;
                let b: Vec<u8> = v
                    .split(':')
                    .map(|p| u8::from_str_radix(p, 16))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--mac-prefix {v}: {e}"))?;
                o.mac_prefix = b.try_into().map_err(|_| format!("--mac-prefix {v}: three bytes, e.g. 52:54:01"))?;
            }
            "--json" => o.json = true,
            "-h" | "--help" => {
                println!(
                    "provd-storm --machines N [--spread-ms MS] [--mac-prefix 52:54:01] [--json]\n\n\
                     N machines (MACs PREFIX:00:00:01 up) start within MS milliseconds and walk DHCP, TFTP,\n\
                     iPXE DHCP, script, kernel, initrd, kickstart and callbacks. Run it from lab/bench/storm.sh."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    if o.machines == 0 || o.machines > 0xff_ffff {
        return Err("--machines is 1 to 16777215".into());
    }
    Ok(o)
}

/// The stages a machine passes, in order; each is timed from the machine's power-on.
const STAGES: [&str; 8] = [
    "dhcp-rom",
    "tftp",
    "dhcp-ipxe",
    "script",
    "kernel+initrd",
    "kickstart",
    "callbacks",
    "installed",
];

/// One machine's walk: when each stage ended (from power-on), or where and why it failed.
struct Walk {
    done: Vec<Duration>,
    failure: Option<(usize, String)>,
}

async fn machine(clients: Arc<dhcp::Clients>, index: u32, mac: [u8; 6]) -> Walk {
    let start = Instant::now();
    let mut done = Vec::new();
    let result = walk(&clients, index, mac, start, &mut done).await;
    Walk {
        failure: result.err().map(|e| (done.len(), e)),
        done,
    }
}

async fn walk(
    clients: &dhcp::Clients,
    index: u32,
    mac: [u8; 6],
    start: Instant,
    done: &mut Vec<Duration>,
) -> Result<(), String> {
    let mut mark = || done.push(start.elapsed());
    let rom = clients.dora(mac, index << 4 | 1, dhcp::Stage::Rom).await?;
    mark();
    let file = rom.file.ok_or("the ROM's ACK names no boot file")?;
    let bytes = tftp::read(rom.address, rom.server, &file).await?;
    if bytes == 0 {
        return Err(format!("{file}: empty"));
    }
    mark();
    let ipxe = clients.dora(mac, index << 4 | 2, dhcp::Stage::Ipxe).await?;
    mark();
    let from = ipxe.address;
    let script_url = ipxe.file.ok_or("iPXE's ACK names no script")?;
    let script = text(http::call(from, "GET", &script_url, "", true).await?, &script_url)?;
    let plan = Plan::read(&script)?;
    mark();
    for url in [&plan.kernel, &plan.initrd] {
        let a = http::call(from, "GET", url, "", false).await?;
        if a.status != 200 || a.length == 0 {
            return Err(format!("GET {url}: {} with {} bytes", a.status, a.length));
        }
    }
    mark();
    let kickstart = text(http::call(from, "GET", &plan.kickstart, "", true).await?, &plan.kickstart)?;
    mark();
    // A kickstart with provd's callbacks: the installer reports as el-generic.ks.j2 does.
    if let Some((base, token)) = callback(&kickstart) {
        for event in ["installing", "post-started", "installed"] {
            let url = format!("{base}/{event}?token={token}");
            let a = http::call(from, "POST", &url, event, true).await?;
            if a.status != 200 {
                return Err(format!("POST {url}: {} {}", a.status, String::from_utf8_lossy(&a.body).trim()));
            }
            // "callbacks" ends with post-started, "installed" with the last one.
            if event != "installing" {
                mark();
            }
        }
    }
    Ok(())
}

fn text(a: http::Answer, url: &str) -> Result<String, String> {
    let body = String::from_utf8_lossy(&a.body).into_owned();
    if a.status != 200 {
        return Err(format!("GET {url}: {} {}", a.status, body.trim()));
    }
    Ok(body)
}

/// What an iPXE install script tells the machine to fetch.
struct Plan {
    kernel: String,
    initrd: String,
    kickstart: String,
}

impl Plan {
    fn read(script: &str) -> Result<Plan, String> {
        let kernel_line = script
            .lines()
            .find(|l| l.starts_with("kernel "))
            .ok_or_else(|| format!("the script installs nothing: {:?}", script.lines().nth(1).unwrap_or("")))?;
        let kernel = kernel_line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let kickstart = kernel_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("inst.ks="))
            .ok_or("the kernel line has no inst.ks=")?
            .to_string();
        let initrd = script
            .lines()
            .find(|l| l.starts_with("initrd "))
            .and_then(|l| l.split_whitespace().last())
            .ok_or("the script has no initrd")?
            .to_string();
        Ok(Plan {
            kernel,
            initrd,
            kickstart,
        })
    }
}

/// The callback base URL and token in a kickstart (`"<base>/installing?token=<t>"`).
fn callback(kickstart: &str) -> Option<(String, String)> {
    let at = kickstart.find("/installing?token=")?;
    let begin = kickstart[..at].rfind('"')? + 1;
    let token: String = kickstart[at + "/installing?token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    Some((kickstart[begin..at].to_string(), token))
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("provd-storm: {e}");
            std::process::exit(2);
        }
    };
    let clients = match dhcp::Clients::bind().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("provd-storm: bind 0.0.0.0:68: {e} (run it in the client namespace as root)");
            std::process::exit(1);
        }
    };
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=o.machines {
        let [_, a, b, c] = i.to_be_bytes();
        let mac = [o.mac_prefix[0], o.mac_prefix[1], o.mac_prefix[2], a, b, c];
        let delay = o.spread.mul_f64(f64::from(i - 1) / f64::from(o.machines));
        let clients = clients.clone();
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            machine(clients, i, mac).await
        });
    }
    let mut walks = Vec::new();
    let mut progress = Instant::now();
    while let Some(w) = tasks.join_next().await {
        walks.push(w.expect("a machine's task"));
        if progress.elapsed() > Duration::from_secs(5) {
            eprintln!("provd-storm: {} of {} machines done", walks.len(), o.machines);
            progress = Instant::now();
        }
    }
    report(&o, &walks, began.elapsed(), &clients);
}

fn report(o: &Options, walks: &[Walk], total: Duration, clients: &dhcp::Clients) {
    let mut failures: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in walks {
        if let Some((stage, why)) = &w.failure {
            failures.entry(STAGES[*stage]).or_default().push(why);
        }
    }
    let failed: usize = failures.values().map(Vec::len).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut rows = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        let mut t: Vec<Duration> = walks.iter().filter_map(|w| w.done.get(i).copied()).collect();
        if t.is_empty() {
            continue;
        }
        t.sort();
        rows.push((*stage, t.len(), quantile(&t, 0.5), quantile(&t, 0.99), *t.last().unwrap()));
    }
    let malformed = clients.malformed.load(std::sync::atomic::Ordering::Relaxed);
    if o.json {
        let stages: Vec<String> = rows
            .iter()
            .map(|(s, n, p50, p99, max)| {
                format!(
                    "{{\"stage\":\"{s}\",\"reached\":{n},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
                    ms(*p50),
                    ms(*p99),
                    ms(*max)
                )
            })
            .collect();
        let fails: Vec<String> = failures
            .iter()
            .map(|(s, v)| format!("{{\"stage\":\"{s}\",\"count\":{},\"first\":{:?}}}", v.len(), v[0]))
            .collect();
        println!(
            "{{\"machines\":{},\"failed\":{failed},\"total_ms\":{:.1},\"malformed_dhcp\":{malformed},\"stages\":[{}],\"failures\":[{}]}}",
            o.machines,
            ms(total),
            stages.join(","),
            fails.join(",")
        );
        return;
    }
    println!(
        "provd-storm: {} machines, {} failed, all done in {:.1} s",
        o.machines,
        failed,
        total.as_secs_f64()
    );
    println!("{:<14} {:>8} {:>10} {:>10} {:>10}", "stage ends", "reached", "p50 s", "p99 s", "max s");
    for (s, n, p50, p99, max) in &rows {
        println!(
            "{s:<14} {n:>8} {:>10.3} {:>10.3} {:>10.3}",
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            max.as_secs_f64()
        );
    }
    for (stage, why) in &failures {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for w in why {
            *kinds.entry(w).or_default() += 1;
        }
        for (w, n) in kinds {
            println!("failed at {stage}: {n} x {w}");
        }
    }
    if malformed > 0 {
        println!("{malformed} undecodable DHCP packets received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_install_script_and_the_kickstarts_callbacks() {
        let script = "#!ipxe\necho provd: installing m1\nkernel http://10.80.0.1:8080/assets/k initrd=initrd.img quiet \
                      inst.ks=http://10.80.0.1:8080/ks/m1?token=ab12\ninitrd --name initrd.img http://10.80.0.1:8080/assets/i\nboot\n";
        let p = Plan::read(script).unwrap();
        assert_eq!(p.kernel, "http://10.80.0.1:8080/assets/k");
        assert_eq!(p.initrd, "http://10.80.0.1:8080/assets/i");
        assert_eq!(p.kickstart, "http://10.80.0.1:8080/ks/m1?token=ab12");
        assert!(Plan::read("#!ipxe\necho provd: m1 boots from its local disk\nexit\n").is_err());
        let ks = "%pre\ncurl -fsS -X POST --data \"x\" \"http://10.80.0.1:8080/callback/m1/installing?token=ab12\" || true\n";
        assert_eq!(
            callback(ks),
            Some(("http://10.80.0.1:8080/callback/m1".into(), "ab12".into()))
        );
        assert_eq!(callback("%post\necho static\n"), None);
    }
}
