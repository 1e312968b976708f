//! `Listeners`: every socket `provd serve` answers on, bound before any task starts, so an
//! address in use or a missing interface is a startup failure with its name, and nothing is
//! half-started when it happens. `Listeners::bind` binds what the config says; in-process
//! tests fill the fields with loopback sockets of their own (port 0) and hand them to
//! `daemon::serve` the same way.
//!
//! Per served site: DHCP on each configured interface (SO_BINDTODEVICE), TFTP (port 69) and
//! boot HTTP (`http_port`) on its `server_address`, and on a failover secondary the failover
//! and replication ports its partner dials. The admin API on `api_listen`.

use super::Services;
use super::TFTP_PORT;
use crate::config::FailoverRole;
use crate::config::topology::Ingress;
use crate::dhcp::server::{self, ReplyPorts};
use anyhow::{Context, bail};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};

/// DHCP's sockets, each with the ingress it serves, and where its replies go.
pub struct DhcpListeners {
    pub sockets: Vec<(UdpSocket, Ingress)>,
    /// DHCP's own ports in production; others on loopback in tests.
    pub reply_ports: ReplyPorts,
}

/// The sockets a failover secondary's partner dials (a primary dials, so has none), by site.
#[derive(Default)]
pub struct PairListeners {
    pub failover: HashMap<String, TcpListener>,
    pub replication: HashMap<String, TcpListener>,
}

/// The admin API's socket, with TLS when `[daemon] api_tls`.
pub struct ApiListener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct Listeners {
    pub dhcp: DhcpListeners,
    pub tftp: Vec<UdpSocket>,
    /// Boot HTTP, each with the site it answers for.
    pub boot_http: Vec<(String, TcpListener)>,
    pub api: ApiListener,
    pub pair: PairListeners,
}

impl Listeners {
    /// Bind everything the current config asks for. The API on `api_addr`, with `api_tls`.
    pub async fn bind(
        services: &Services,
        api_addr: SocketAddr,
        api_tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Listeners> {
        let generation = services.generations().current();

        let mut dhcp = Vec::new();
        for (sock, ingress) in server::bind(services.leases().ingresses())? {
            tracing::info!(
                "DHCP listening on {} ({}) for site {}",
                ingress.listen.interface,
                ingress.listen.address,
                ingress.site
            );
            dhcp.push((sock, ingress));
        }

        // TFTP and HTTP on each served site's server address (sites may share one).
        let mut site_addrs: BTreeMap<(Ipv4Addr, u16), String> = BTreeMap::new();
        for s in generation.served_sites() {
            site_addrs
                .entry((s.server_address, s.http_port))
                .or_insert_with(|| s.name.clone());
        }
        let mut tftp = Vec::new();
        let mut tftp_bound = BTreeSet::new();
        let mut boot_http = Vec::new();
        for ((addr, port), site) in &site_addrs {
            if tftp_bound.insert(*addr) {
                let sock = crate::tftp::bind(SocketAddr::from((*addr, TFTP_PORT)))
                    .with_context(|| format!("cannot listen for TFTP on {addr}:{TFTP_PORT} (site {site})"))?;
                tracing::info!(
                    "TFTP on {addr}:{TFTP_PORT} serving {}",
                    services.assets_root().display()
                );
                tftp.push(sock);
            }
            let http_addr = SocketAddr::from((*addr, *port));
            if http_addr == api_addr {
                bail!(
                    "site {site}'s boot HTTP address {http_addr} is also the API address: give [daemon] api_listen \
                     another port"
                );
            }
            let listener = TcpListener::bind(http_addr)
                .await
                .with_context(|| format!("cannot listen for HTTP on {http_addr} (site {site})"))?;
            tracing::info!("boot HTTP on http://{http_addr} for site {site}");
            boot_http.push((site.clone(), listener));
        }

        let mut pair = PairListeners::default();
        for site in generation.served_sites() {
            let Some(f) = site.failover.as_ref().filter(|f| f.role == FailoverRole::Secondary) else {
                continue;
            };
            let at = SocketAddr::from((f.address, f.port));
            let l = TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen for failover on {at} (site {})", site.name))?;
            pair.failover.insert(site.name.clone(), l);
            // Replication needs the pair's certificates, so the CA.
            if services.ca().is_some() {
                let at = SocketAddr::from((f.address, f.replication_port));
                let l = TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen for replication on {at} (site {})", site.name))?;
                pair.replication.insert(site.name.clone(), l);
            }
        }

        let socket = TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot listen for the API on {api_addr}"))?;
        tracing::info!(
            "API on {}://{api_addr}",
            if api_tls.is_some() { "https" } else { "http" }
        );
        Ok(Listeners {
            dhcp: DhcpListeners {
                sockets: dhcp,
                reply_ports: ReplyPorts::STANDARD,
            },
            tftp,
            boot_http,
            api: ApiListener { socket, tls: api_tls },
            pair,
        })
    }
}
