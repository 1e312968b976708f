//! The boot policy as one trait, asked by all three protocols (pixiecore's `Booter`):
//! DHCP asks `dhcp` for every packet (ignore, lease only, or which first-stage file; pure
//! and quick, under the lease engine's lock), and HTTP and TFTP ask `script`, through
//! `Boot::plan`, what a machine's per-host script says now (install with a token, its
//! local disk, or the menu, which a discovering site turns into the discovery image).
//!
//! `StandardPolicy` is the config's and the inventory's word: `SitePolicy` for DHCP, the
//! inventory's boot-once decision for the script. Tests put a fake in its place
//! (`daemon::Services::build_with_policy`) and see every protocol follow it.

use super::firmware::{DhcpAsk, DhcpBoot, DhcpPolicy, SitePolicy};
use crate::config::HostIndex;
use crate::inventory::{BootDecision, Inventory, InventoryError};
use crate::mac::MacAddr;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;

/// What HTTP and TFTP ask about one machine's script.
#[derive(Debug, Clone, Copy)]
pub struct ScriptAsk<'a> {
    /// The host index of the generation the request is answered from.
    pub hosts: &'a HostIndex,
    pub mac: MacAddr,
    /// The address it asked from (a configured host's was checked: it holds it).
    pub from: Ipv4Addr,
    /// The config names this MAC.
    pub configured: bool,
    /// `from` is leased to this MAC by this server now.
    pub leased: bool,
}

pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Result<BootDecision, InventoryError>> + Send + 'a>>;

pub trait BootPolicy: DhcpPolicy {
    fn script<'a>(&'a self, ask: ScriptAsk<'a>) -> DecisionFuture<'a>;
}

/// The config and the inventory decide.
pub struct StandardPolicy {
    inventory: Arc<Inventory>,
}

impl StandardPolicy {
    pub fn new(inventory: Arc<Inventory>) -> StandardPolicy {
        StandardPolicy { inventory }
    }
}

impl DhcpPolicy for StandardPolicy {
    fn dhcp(&self, ask: &DhcpAsk<'_>) -> DhcpBoot {
        SitePolicy.dhcp(ask)
    }
}

impl BootPolicy for StandardPolicy {
    /// A configured host: the inventory's boot-once decision (which may mint a token). An
    /// unknown machine gets the menu; it is recorded (discovered) only when it asks from the
    /// address leased to its MAC: a request for a made-up MAC costs the asker nothing, a
    /// lease costs a pool address.
    fn script<'a>(&'a self, ask: ScriptAsk<'a>) -> DecisionFuture<'a> {
        Box::pin(async move {
            if !ask.configured && !ask.leased {
                return Ok(BootDecision::Menu);
            }
            self.inventory.boot(ask.hosts, ask.mac, ask.from).await
        })
    }
}
