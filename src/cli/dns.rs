//! `provd dns`: each site's DNS updates as the daemon sees them: the server and zone, how
//! many names it holds from provd, the queue still to send and the last error.

use super::ServerTarget;
use crate::dns::updater::DnsView;
use std::process::ExitCode;

pub fn status(target: &ServerTarget, json: bool) -> anyhow::Result<ExitCode> {
    let api = target.api()?;
    let view: DnsView = api.require(api.get("/api/dns")?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    if view.sites.is_empty() {
        println!("no served site has [sites.NAME.dns]");
        return Ok(ExitCode::SUCCESS);
    }
    println!("updates accepted: {}  failed tries: {}", view.accepted, view.failed);
    for (site, s) in &view.sites {
        println!(
            "{site}: zone {} at {}: {} names, {} pending",
            s.zone,
            s.server,
            s.names,
            s.pending.len()
        );
        for c in &s.pending {
            let show = |a: Option<std::net::Ipv4Addr>| a.map_or("-".to_string(), |a| a.to_string());
            println!("  {} {} -> {}", c.fqdn, show(c.from), show(c.to));
        }
        if let Some(e) = &s.last_error {
            let at = s.last_error_at.map(crate::clock::rfc3339).unwrap_or_default();
            println!("  last error ({at}): {e}");
        }
    }
    // Pending changes are not an error by themselves (they may be on their way); a site
    // whose last try failed is.
    let failing = view.sites.values().any(|s| s.retry_at.is_some());
    Ok(if failing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
