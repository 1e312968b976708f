//! Power control and one-time network boot through hosts' BMCs: Redfish natively over
//! HTTPS (`redfish`, `https`), IPMI over LAN through ipmitool (`ipmi`). Credentials come from
//! the secrets file (`secrets`), read at each use, never from the site configs.
//!
//! Every driver call is blocking (sockets, a child process) and bounded by a timeout; the
//! daemon runs them on the blocking pool, at most `MAX_PARALLEL` at once whatever the
//! number of API requests, so a rack-wide command cannot exhaust threads or the BMC network.
//!
//! Must never: log or return a credential, or act on a host whose entry has no BMC.

pub mod https;
pub mod ipmi;
pub mod redfish;
pub mod secrets;

use crate::config::{Bmc, BmcDriver};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// BMC operations running at once in one daemon.
pub const MAX_PARALLEL: usize = 64;
/// One driver call (all its requests or ipmitool runs) ends within this.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Status,
    On,
    Off,
    /// Off-and-on for a running machine, on for a stopped one.
    Cycle,
    /// Boot from the network at the next start only.
    PxeOnce,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
            Action::PxeOnce => "pxe-once",
        }
    }
}

/// A power action provd does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown power action {0:?} (status, on, off, cycle, pxe-once)")]
pub struct UnknownAction(pub String);

impl std::str::FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, UnknownAction> {
        match s {
            "status" => Ok(Action::Status),
            "on" => Ok(Action::On),
            "off" => Ok(Action::Off),
            "cycle" => Ok(Action::Cycle),
            "pxe-once" => Ok(Action::PxeOnce),
            _ => Err(UnknownAction(s.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
    #[default]
    Unknown,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }
}

/// What the BMC said after the action.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The power state the BMC reports once the action was accepted.
    pub state: PowerState,
    /// A note ("already off", "next boot: PXE (once)").
    pub detail: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BmcError {
    #[error("{0}")]
    Config(String),
    #[error("BMC unreachable: {0}")]
    Unreachable(String),
    #[error("BMC refused: {0}")]
    Refused(String),
    #[error("BMC certificate not accepted: {0}")]
    Certificate(String),
    #[error("BMC failed: {0}")]
    Failed(String),
}

/// One blocking call: the action on the BMC `bmc` with credentials from `secrets_file`.
pub fn act_blocking(
    bmc: &Bmc,
    secrets_file: Option<&std::path::Path>,
    action: Action,
    timeout: Duration,
) -> Result<Outcome, BmcError> {
    let secrets = secrets::Secrets::load(secrets_file).map_err(|e| BmcError::Config(e.to_string()))?;
    let cred = secrets
        .get(&bmc.credentials)
        .map_err(|e| BmcError::Config(e.to_string()))?;
    match bmc.driver {
        BmcDriver::Redfish => redfish::act(bmc, cred, action, timeout),
        BmcDriver::Ipmi => ipmi::act(bmc, cred, action, timeout),
    }
}

/// The daemon's gate to BMCs: a cap on calls in flight.
pub struct Power {
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Power {
    fn default() -> Self {
        Power {
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL)),
        }
    }
}

impl Power {
    /// Run `action` on `bmc` off the runtime, waiting for a free slot first. `secrets_file`:
    /// the current config's `[daemon] bmc_secrets`.
    pub async fn act(&self, bmc: Bmc, secrets_file: Option<PathBuf>, action: Action) -> Result<Outcome, BmcError> {
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BmcError::Failed("shutting down".into()))?;
        let file = secrets_file;
        tokio::task::spawn_blocking(move || act_blocking(&bmc, file.as_deref(), action, TIMEOUT))
            .await
            .map_err(|e| BmcError::Failed(format!("BMC task: {e}")))?
    }
}
