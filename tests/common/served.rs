//! provd in the test process: `daemon::Services` run by `daemon::serve` on loopback sockets
//! this harness binds itself, in place of `provd serve` in a network namespace. No root, no
//! namespaces; real clients (curl, tftp-hpa, the `provd` CLI) talk to it over loopback, each
//! test on its own `127.N.0.0/24` (all of 127/8 is local, so a client can take any source
//! address there with `--interface` or `bind`).
//!
//! Ports are the kernel's (port 0), so tests run in parallel: `Sockets::bind` first, then
//! write the config with the ports it got (`http_port`, `api_listen`), then `Served::start`.

use provd::daemon::{ApiListener, DhcpListeners, Listeners, PairListeners, Services};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

/// One site's boot listeners.
pub struct SiteSockets {
    pub site: String,
    pub http: std::net::TcpListener,
    pub tftp: std::net::UdpSocket,
}

/// Sockets bound before the config is written (it names their ports).
pub struct Sockets {
    pub sites: Vec<SiteSockets>,
    pub api: std::net::TcpListener,
}

impl Sockets {
    /// HTTP and TFTP on each site's server address, the API on the first one's.
    pub fn bind(sites: &[(&str, Ipv4Addr)]) -> Sockets {
        let sites: Vec<SiteSockets> = sites
            .iter()
            .map(|(site, ip)| SiteSockets {
                site: site.to_string(),
                http: std::net::TcpListener::bind((*ip, 0)).unwrap(),
                tftp: tftp_socket((*ip, 0).into()),
            })
            .collect();
        let api = std::net::TcpListener::bind((sites[0].http.local_addr().unwrap().ip(), 0)).unwrap();
        Sockets { sites, api }
    }

    pub fn http(&self, site: usize) -> SocketAddr {
        self.sites[site].http.local_addr().unwrap()
    }

    pub fn tftp(&self, site: usize) -> SocketAddr {
        self.sites[site].tftp.local_addr().unwrap()
    }

    pub fn api(&self) -> SocketAddr {
        self.api.local_addr().unwrap()
    }

    /// The `[daemon]` table for these sockets (`api_listen`) and `state`.
    pub fn daemon_toml(&self, assets: &Path, state: &Path) -> String {
        format!(
            "[daemon]\ntemplates_dir = \"{}\"\nassets_dir = \"{}\"\napi_listen = \"{}\"\nstate_dir = \"{}\"\n",
            super::repo("templates").display(),
            assets.display(),
            self.api(),
            state.display()
        )
    }

    /// A whole config for these sockets: the `[daemon]` table, the shared profiles fixture,
    /// then `sites` (each a `SiteBuilder::toml()`).
    pub fn config(&self, assets: &Path, state: &Path, sites: &[String]) -> String {
        format!(
            "{}\n{}\n{}",
            self.daemon_toml(assets, state),
            super::builder::fixture("profiles"),
            sites.join("\n")
        )
    }

    /// The same addresses bound again (a restart: the config names the ports).
    fn rebind(addrs: &Addrs) -> Sockets {
        Sockets {
            sites: addrs
                .sites
                .iter()
                .map(|(site, http, tftp)| SiteSockets {
                    site: site.clone(),
                    http: std::net::TcpListener::bind(http).unwrap(),
                    tftp: tftp_socket(*tftp),
                })
                .collect(),
            api: std::net::TcpListener::bind(addrs.api).unwrap(),
        }
    }
}

/// A TFTP request socket with the receive buffer `provd::tftp::bind` gives production (a
/// rack's burst of RRQs fits).
fn tftp_socket(at: SocketAddr) -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind(at).unwrap();
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
    s
}

struct Addrs {
    sites: Vec<(String, SocketAddr, SocketAddr)>,
    api: SocketAddr,
}

/// provd serving in this process; stopped on drop.
pub struct Served {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// Where relayed DHCP goes (one socket per ingress, in config order).
    pub dhcp: Vec<SocketAddr>,
    /// Where DHCP answers come back: a relay at the first ingress's address (list it in
    /// the site's `relays`).
    pub relay: std::net::UdpSocket,
    addrs: Addrs,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Served {
    /// Build the services from `config` and serve them on `sockets`.
    pub fn start(sockets: Sockets, config: &Path, state_dir: &Path) -> Served {
        let addrs = Addrs {
            sites: sockets
                .sites
                .iter()
                .map(|s| {
                    (
                        s.site.clone(),
                        s.http.local_addr().unwrap(),
                        s.tftp.local_addr().unwrap(),
                    )
                })
                .collect(),
            api: sockets.api(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = provd::config::load(&[config.to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
        let services = build_when_free(Arc::new(cfg), config, state_dir);
        let first = services.leases().ingresses()[0].listen.address;
        let relay = std::net::UdpSocket::bind((first, 0)).unwrap();
        relay.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let reply_ports = provd::dhcp::server::ReplyPorts {
            client: 1, // never used: the tests' DHCP is relayed
            server: relay.local_addr().unwrap().port(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (task, dhcp) = runtime.block_on(async {
            let mut dhcp = Vec::new();
            let mut dhcp_sockets = Vec::new();
            for ingress in services.leases().ingresses() {
                // The receive buffer `dhcp::socket::bind_interface` asks for.
                let s = std::net::UdpSocket::bind((ingress.listen.address, 0)).unwrap();
                let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
                s.set_nonblocking(true).unwrap();
                let s = tokio::net::UdpSocket::from_std(s).unwrap();
                dhcp.push(s.local_addr().unwrap());
                dhcp_sockets.push((s, ingress.clone()));
            }
            let tokio_tcp = |l: std::net::TcpListener| {
                l.set_nonblocking(true).unwrap();
                tokio::net::TcpListener::from_std(l).unwrap()
            };
            let listeners = Listeners {
                dhcp: DhcpListeners {
                    sockets: dhcp_sockets,
                    reply_ports,
                },
                tftp: sockets
                    .sites
                    .iter()
                    .map(|s| {
                        let u = s.tftp.try_clone().unwrap();
                        u.set_nonblocking(true).unwrap();
                        tokio::net::UdpSocket::from_std(u).unwrap()
                    })
                    .collect(),
                boot_http: sockets.sites.into_iter().map(|s| (s.site, tokio_tcp(s.http))).collect(),
                api: ApiListener {
                    socket: tokio_tcp(sockets.api),
                    tls: None,
                },
                pair: PairListeners::default(),
            };
            let task = tokio::spawn(provd::daemon::serve(services, listeners, async move {
                let _ = stopped.await;
            }));
            (task, dhcp)
        });
        Served {
            config: config.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            dhcp,
            relay,
            addrs,
            runtime: Some(runtime),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop (the orderly path) and start again on the same addresses and state.
    pub fn restart(mut self) -> Served {
        self.stop();
        let sockets = Sockets::rebind(&self.addrs);
        Served::start(sockets, &self.config.clone(), &self.state_dir.clone())
    }

    /// Stop serving: `serve` returns, every task ends, every socket closes.
    pub fn stop(&mut self) {
        let (Some(rt), Some(stop), Some(task)) = (self.runtime.take(), self.stop.take(), self.task.take()) else {
            return;
        };
        let _ = stop.send(());
        let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
        rt.shutdown_timeout(Duration::from_secs(2));
        match r {
            Ok(Ok(Ok(()))) => {}
            other => panic!("serve did not stop cleanly: {other:?}"),
        }
    }

    /// One relayed DHCP message and its answer (sent up to 4 times, 300 ms apart).
    pub fn dhcp_exchange(&self, m: &dhcproto::v4::Message) -> Option<dhcproto::v4::Message> {
        super::client::exchange(&self.relay, self.dhcp[0], m)
    }

    /// A relay at `giaddr` (any of 127/8): bound on the port the server answers relays on,
    /// so answers for that giaddr come to it. Its source address is `giaddr` too.
    pub fn relay_at(&self, giaddr: Ipv4Addr) -> std::net::UdpSocket {
        let port = self.relay.local_addr().unwrap().port();
        let s = std::net::UdpSocket::bind((giaddr, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s
    }

    /// Site `i`'s boot HTTP address.
    pub fn http(&self, i: usize) -> SocketAddr {
        self.addrs.sites[i].1
    }

    /// Site `i`'s TFTP address.
    pub fn tftp(&self, i: usize) -> SocketAddr {
        self.addrs.sites[i].2
    }

    /// The admin API's address.
    pub fn api(&self) -> SocketAddr {
        self.addrs.api
    }

    /// The relay's address (the giaddr of relayed messages).
    pub fn giaddr(&self) -> Ipv4Addr {
        match self.relay.local_addr().unwrap().ip() {
            std::net::IpAddr::V4(ip) => ip,
            _ => unreachable!(),
        }
    }

    /// A `provd` client command against this server; it must succeed.
    pub fn cli(&self, args: &[&str]) -> Output {
        super::run(&mut self.cli_command(args))
    }

    /// The same, for a command that may fail (its output either way).
    pub fn cli_output(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().unwrap()
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(super::provd_bin());
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir);
        c
    }

    pub fn leases(&self) -> Vec<serde_json::Value> {
        serde_json::from_slice(&self.cli(&["leases", "list", "--json"]).stdout).unwrap()
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_slice(&self.cli(&["stats", "--json"]).stdout).unwrap()
    }
}

/// `Services::build`, retried for a few seconds while the store is still open: after a stop
/// the lease committer (a thread) closes the database once the last handle is gone, a
/// moment after `serve` returned (a process exit does it at once).
fn build_when_free(cfg: Arc<provd::config::Config>, config: &Path, state_dir: &Path) -> Services {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Services::build(cfg.clone(), &[config.to_path_buf()], &[], state_dir) {
            Ok(s) => return s,
            Err(e) if format!("{e:#}").contains("already open") && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e:#}"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let (Some(rt), Some(stop)) = (self.runtime.take(), self.stop.take()) {
            let _ = stop.send(());
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
