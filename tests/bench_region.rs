//! Benchmark (ignored in the test suite; run by `lab/bench/region-catchup.sh`): the region
//! (`provd region serve`, the real binary) following SITES simulated sites of HOSTS hosts
//! each. Each simulated site is an HTTPS feed (`GET /api/feed`, the site API's wire format,
//! served through provd's own listener with a site CA the region cross-signed): a relist
//! of its hosts, then the changes it is told to make. Measured, in one run:
//!
//! - cold catch-up: from the region's start until it holds every site's every host;
//! - the region's memory (VmRSS) then;
//! - per-event cost: every site changes CHANGES hosts at once; the time until the region
//!   holds every change, divided by the changes;
//! - outage catch-up: every site "restarts" (a new epoch: the region must relist it) with
//!   CHANGES more changes; the time until the region holds them all again.

mod common;

use common::{ChildGuard, Workdir, provd_bin, wait_until};
use provd::http::feed::{FeedCursor, FeedQuery, LeaseSummary, Page};
use provd::inventory::{HistoryEntry, HostRecord, Status};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One simulated site's inventory and change log.
struct Sim {
    name: String,
    epoch: u64,
    records: Vec<HostRecord>,
    /// (seq, index into records) of each change.
    log: Vec<(u64, usize)>,
    seq: u64,
}

impl Sim {
    fn new(site: usize, hosts: usize) -> Sim {
        let name = format!("s{site:02}");
        let records = (0..hosts)
            .map(|i| {
                let mac = format!("52:54:{:02x}:00:{:02x}:{:02x}", site, i / 256, i % 256)
                    .parse()
                    .unwrap();
                let mut r = provd::inventory::transition::new_record(mac, 1_790_000_000);
                r.hostname = Some(format!("hv{i:04}"));
                r.site = Some(name.clone());
                r.profile = Some("el9-kvm".into());
                r.status = Status::Ready;
                // A record as an installed hypervisor's looks: a few history entries.
                r.history = ["assigned", "installing", "installed", "ready"]
                    .iter()
                    .enumerate()
                    .map(|(n, w)| HistoryEntry {
                        at: 1_790_000_000 + n as u64,
                        status: Status::Installed,
                        what: format!("{w} (profile el9-kvm, from 10.0.{site}.{})", i % 250),
                    })
                    .collect();
                r
            })
            .collect();
        Sim {
            name,
            epoch: 1,
            records,
            log: Vec::new(),
            seq: 0,
        }
    }

    fn change(&mut self, n: usize) {
        for k in 0..n {
            let i = k % self.records.len();
            self.seq += 1;
            let r = &mut self.records[i];
            r.updated += 1;
            r.version.at_ms += 1;
            self.log.push((self.seq, i));
        }
    }

    fn page(&self, q: &FeedQuery) -> Page {
        let cursor = match (q.epoch, q.seq) {
            (Some(e), Some(s)) if e == self.epoch => Some(s),
            _ => None,
        };
        let (relist, hosts) = match cursor {
            None => (true, self.records.clone()),
            Some(after) => {
                let mut idx: Vec<usize> = self.log.iter().filter(|(s, _)| *s > after).map(|(_, i)| *i).collect();
                idx.sort_unstable();
                idx.dedup();
                (false, idx.into_iter().map(|i| self.records[i].clone()).collect())
            }
        };
        Page {
            sites: vec![self.name.clone()],
            cursor: FeedCursor {
                epoch: self.epoch,
                seq: self.seq,
                events: 0,
            },
            relist,
            hosts,
            gone: vec![],
            events: vec![],
            more: false,
            hypervisors: vec![],
            leases: LeaseSummary {
                bound: self.records.len() as u64,
                known: self.records.len() as u64,
            },
            at: provd::clock::unix_now(),
        }
    }
}

type Shared = Arc<(Mutex<Sim>, tokio::sync::Notify)>;

async fn feed(
    axum::extract::State(s): axum::extract::State<Shared>,
    axum::extract::Query(q): axum::extract::Query<FeedQuery>,
) -> axum::Json<Page> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(20));
    loop {
        let notified = s.1.notified();
        let page = s.0.lock().unwrap().page(&q);
        if page.relist || !page.hosts.is_empty() || tokio::time::Instant::now() >= deadline {
            return axum::Json(page);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return axum::Json(page);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[ignore = "a benchmark: lab/bench/region-catchup.sh"]
fn region_catch_up_with_many_sites() {
    let (sites, hosts, changes) = (env("SITES", 50), env("HOSTS", 500), env("CHANGES", 200));
    let w = Workdir::new();
    let region_dir = w.path("region");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The region's root, then each simulated site: its CA (cross-signed), its feed.
    let mut toml = format!(
        "[region]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
        region_dir.display()
    );
    let trust = provd::region::trust::Trust::new(region_dir.join("pki"));
    trust.init("bench", false).unwrap();
    let root = std::fs::read_to_string(region_dir.join("pki/ca-cert.pem")).unwrap();
    let mut sims: Vec<Shared> = Vec::new();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for i in 0..sites {
        let sim = Sim::new(i, hosts);
        let dir = w.path(&format!("ca-{}", sim.name));
        provd::pki::init(&dir, &format!("provd {}", sim.name), 30, false).unwrap();
        let ca = provd::pki::Ca::load(&dir).unwrap();
        trust.add_site(&sim.name, ca.cert_pem()).unwrap();
        let (tls, _) = provd::http::tls::server_config(&ca, &[], &["127.0.0.1".parse().unwrap()], Some(&root)).unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        toml.push_str(&format!(
            "\n[sites.{}]\nurls = [\"https://127.0.0.1:{port}\"]\n",
            sim.name
        ));
        let shared: Shared = Arc::new((Mutex::new(sim), tokio::sync::Notify::new()));
        let app = axum::Router::new()
            .route("/api/feed", axum::routing::get(feed))
            .with_state(shared.clone());
        let stop = stop_rx.clone();
        rt.spawn(provd::http::listen::serve(
            listener,
            app,
            provd::http::listen::API_LIMITS,
            stop,
            |_| {},
            provd::http::listen::Transport::Tls(tls),
            None,
        ));
        sims.push(shared);
    }
    // The region's own API on a port chosen now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = toml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = w.write("region.toml", &toml);
    let started = Instant::now();
    let mut region = ChildGuard::spawn(
        Command::new(provd_bin())
            .args(["region", "serve", "--config"])
            .arg(&config)
            .env("PROVD_LOG", "warn")
            .stdout(std::process::Stdio::null()),
    );
    let sites_json = || -> Option<serde_json::Value> {
        let out = Command::new(provd_bin())
            .args(["region", "sites", "--json", "--region-config"])
            .arg(&config)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let received = || -> u64 {
        sites_json()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().map(|s| s["records_received"].as_u64().unwrap_or(0)).sum())
            })
            .unwrap_or(0)
    };
    let total_hosts = (sites * hosts) as u64;
    wait_until("the region holds every site's hosts", Duration::from_secs(600), || {
        let v = sites_json()?;
        let all = v.as_array()?;
        (all.len() == sites && all.iter().all(|s| s["hosts"].as_u64() == Some(hosts as u64))).then_some(())
    });
    let cold = started.elapsed();
    let rss = rss_kib(region.id());
    let db = std::fs::metadata(region_dir.join("region.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "region catch-up (cold): {sites} sites x {hosts} hosts = {total_hosts} records in {:.2} s ({:.0} records/s); region RSS {} MiB, store {} MiB",
        cold.as_secs_f64(),
        total_hosts as f64 / cold.as_secs_f64(),
        rss / 1024,
        db >> 20
    );

    // Every site changes `changes` hosts at once.
    let base = received();
    let t = Instant::now();
    for s in &sims {
        s.0.lock().unwrap().change(changes);
        s.1.notify_waiters();
    }
    let expected = base + (sites * changes.min(hosts)) as u64;
    wait_until("the region holds every change", Duration::from_secs(600), || {
        (received() >= expected).then_some(())
    });
    let events = t.elapsed();
    let n = (sites * changes) as f64;
    println!(
        "region changes: {sites} sites x {changes} changes = {n} in {:.2} s: {:.0} us per change ({:.0} changes/s)",
        events.as_secs_f64(),
        events.as_secs_f64() * 1e6 / n,
        n / events.as_secs_f64()
    );

    // An outage: every site comes back as another run (the region's cursors are void) with
    // more changes; the region relists each.
    let base = received();
    let t = Instant::now();
    for s in &sims {
        let mut sim = s.0.lock().unwrap();
        sim.epoch += 1;
        sim.change(changes);
        drop(sim);
        s.1.notify_waiters();
    }
    wait_until("the region relists every site", Duration::from_secs(600), || {
        (received() >= base + total_hosts).then_some(())
    });
    let relist = t.elapsed();
    println!(
        "region catch-up (every site relisted): {total_hosts} records in {:.2} s; region RSS {} MiB",
        relist.as_secs_f64(),
        rss_kib(region.id()) / 1024
    );
    assert!(!region.exited(), "the region is still running");
}
