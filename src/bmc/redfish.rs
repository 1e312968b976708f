//! Redfish (DMTF DSP0266) over HTTPS, natively: a session (`POST
//! /redfish/v1/SessionService/Sessions`, then `X-Auth-Token`; HTTP Basic when the service
//! offers no sessions, as Ironic's sushy does), the ComputerSystem, `ComputerSystem.Reset`
//! and a one-time `BootSourceOverride` to PXE. The session is deleted when the action ends.

use super::https::{Https, HttpsError, Response};
use super::secrets::Credential;
use super::{Action, BmcError, Outcome, PowerState};
use crate::config::{Bmc, BmcTls};
use std::time::Duration;

enum Auth {
    Session { token: String, location: Option<String> },
    Basic(String),
}

impl Auth {
    fn header(&self) -> (&'static str, String) {
        match self {
            Auth::Session { token, .. } => ("X-Auth-Token", token.clone()),
            Auth::Basic(b) => ("Authorization", format!("Basic {b}")),
        }
    }
}

struct Client {
    http: Https,
    auth: Auth,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<Response, BmcError> {
        let (k, v) = self.auth.header();
        let body = body.map(|b| b.to_string());
        let r = self
            .http
            .request(method, path, &[(k, &v)], body.as_deref().map(str::as_bytes))
            .map_err(transport)?;
        match r.status {
            200..=299 => Ok(r),
            401 | 403 => Err(BmcError::Refused(format!(
                "{method} {path}: HTTP {} (credentials refused)",
                r.status
            ))),
            s => Err(BmcError::Failed(format!("{method} {path}: HTTP {s}: {}", message(&r)))),
        }
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, BmcError> {
        self.call("GET", path, None)?
            .json()
            .map_err(|e| BmcError::Failed(format!("GET {path}: not JSON ({e})")))
    }
}

/// The Redfish error's message when there is one (`error.@Message.ExtendedInfo`).
fn message(r: &Response) -> String {
    let v = r.json().unwrap_or_default();
    v["error"]["@Message.ExtendedInfo"][0]["Message"]
        .as_str()
        .or(v["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).chars().take(200).collect())
}

/// A failed connection: the certificate refused, or no answer.
fn transport(e: HttpsError) -> BmcError {
    if e.is_certificate() {
        BmcError::Certificate(e.to_string())
    } else {
        BmcError::Unreachable(e.to_string())
    }
}

fn login(http: Https, cred: &Credential) -> Result<Client, BmcError> {
    let body = serde_json::json!({ "UserName": cred.username, "Password": cred.password }).to_string();
    let r = http
        .request(
            "POST",
            "/redfish/v1/SessionService/Sessions",
            &[],
            Some(body.as_bytes()),
        )
        .map_err(transport)?;
    let auth = match r.status {
        200..=299 => match r.header("X-Auth-Token") {
            Some(token) => Auth::Session {
                token: token.to_string(),
                location: r.header("Location").map(str::to_string),
            },
            None => basic(cred),
        },
        // No session service (404/405/501), or one behind HTTP Basic itself (401, as
        // sushy-tools' emulator with an auth file): HTTP Basic on every request, as Ironic's
        // sushy falls back. Wrong credentials then show at the first request.
        _ => basic(cred),
    };
    Ok(Client { http, auth })
}

fn basic(cred: &Credential) -> Auth {
    use base64::Engine;
    Auth::Basic(base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", cred.username, cred.password)))
}

/// The ComputerSystem to drive: the configured one, else the only member.
fn system_path(c: &Client, wanted: Option<&str>) -> Result<String, BmcError> {
    let list = c.get("/redfish/v1/Systems")?;
    let members: Vec<String> = list["Members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["@odata.id"].as_str().map(str::to_string))
        .collect();
    match wanted {
        Some(w) => members
            .iter()
            .find(|m| m.trim_end_matches('/').rsplit('/').next() == Some(w) || m.as_str() == w)
            .cloned()
            .ok_or_else(|| BmcError::Failed(format!("no system {w:?} on this BMC (it has: {})", members.join(", ")))),
        None => match members.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(BmcError::Failed("the BMC lists no ComputerSystem".into())),
            many => Err(BmcError::Failed(format!(
                "the BMC has {} systems ({}): name one with bmc.system",
                many.len(),
                many.join(", ")
            ))),
        },
    }
}

fn power_state(c: &Client, system: &str) -> Result<PowerState, BmcError> {
    let s = c.get(system)?;
    Ok(match s["PowerState"].as_str() {
        Some("On") | Some("PoweringOff") => PowerState::On,
        Some("Off") | Some("PoweringOn") => PowerState::Off,
        _ => PowerState::Unknown,
    })
}

fn reset(c: &Client, system: &str, kind: &str) -> Result<(), BmcError> {
    let path = format!("{}/Actions/ComputerSystem.Reset", system.trim_end_matches('/'));
    c.call("POST", &path, Some(&serde_json::json!({ "ResetType": kind })))
        .map(|_| ())
}

pub fn act(bmc: &Bmc, cred: &Credential, action: Action, timeout: Duration) -> Result<Outcome, BmcError> {
    let http = Https::new(&bmc.address, &bmc.tls, timeout).map_err(|e| BmcError::Config(e.to_string()))?;
    let client = login(http, cred)?;
    let result = act_in_session(&client, bmc, action);
    if let Auth::Session {
        location: Some(loc), ..
    } = &client.auth
    {
        let path = loc.find("/redfish/").map_or(loc.as_str(), |i| &loc[i..]);
        let _ = client.call("DELETE", path, None);
    }
    let mut outcome = result?;
    if bmc.tls == BmcTls::Insecure {
        outcome
            .warnings
            .push("the BMC's certificate was not checked (insecure = true)".into());
    }
    Ok(outcome)
}

fn act_in_session(c: &Client, bmc: &Bmc, action: Action) -> Result<Outcome, BmcError> {
    let system = system_path(c, bmc.system.as_deref())?;
    let before = power_state(c, &system)?;
    let mut outcome = Outcome::default();
    match action {
        Action::Status => {}
        Action::On if before == PowerState::On => outcome.detail = "already on".into(),
        Action::On => reset(c, &system, "On")?,
        Action::Off if before == PowerState::Off => outcome.detail = "already off".into(),
        Action::Off => reset(c, &system, "ForceOff")?,
        Action::Cycle if before == PowerState::Off => {
            reset(c, &system, "On")?;
            outcome.detail = "was off: powered on".into();
        }
        Action::Cycle => reset(c, &system, "ForceRestart")?,
        Action::PxeOnce => {
            let path = system.clone();
            c.call(
                "PATCH",
                &path,
                Some(&serde_json::json!({
                    "Boot": { "BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once" }
                })),
            )?;
            outcome.detail = "next boot: PXE (once)".into();
            // What the BMC recorded, not what was asked: some keep the override for every
            // boot (sushy-tools' libvirt backend stores "Continuous").
            let boot = c.get(&system)?["Boot"].clone();
            let (target, enabled) = (
                boot["BootSourceOverrideTarget"].as_str().unwrap_or("?"),
                boot["BootSourceOverrideEnabled"].as_str().unwrap_or("?"),
            );
            if target != "Pxe" {
                return Err(BmcError::Failed(format!(
                    "the BMC accepted the PXE override but reports boot target {target}"
                )));
            }
            if enabled != "Once" {
                outcome.detail = format!("next boot: PXE ({enabled})");
                outcome.warnings.push(format!(
                    "the BMC keeps the PXE override as {enabled:?}, not once: the machine boots from the network \
                     at every start until the override is cleared (provd still answers it with a local boot once installed)"
                ));
            }
        }
    }
    outcome.state = power_state(c, &system)?;
    Ok(outcome)
}
