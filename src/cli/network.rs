//! `provd network PROFILE`: a profile's data-center network (`[profiles.X.network]`) as
//! each installer will get it, rendered offline from the config: the EL kickstart's
//! `network` lines and the `%post` that writes the VLANs' NetworkManager keyfiles, or the
//! Debian image's systemd-networkd units. The boot bridge is addressed by DHCP; the
//! others are shown without the addresses IPAM gives each host (a host's kickstart, served
//! by the daemon, carries them; `provd hosts show HOST` lists them).

use crate::config;
use crate::netmodel::{kickstart, networkd};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct NetworkArgs {
    /// The profile whose network to show.
    pub profile: String,
    /// kickstart (EL8/EL9) or networkd (the Debian image).
    #[arg(long, default_value = "kickstart", value_parser = ["kickstart", "networkd"])]
    pub format: String,
    /// Both renderings as JSON: {"kickstart": {"lines", "post"}, "networkd": [{"file", "text"}]}.
    #[arg(long)]
    pub json: bool,
    #[arg(long = "config", short = 'c', env = "PROVD_CONFIG", default_value = super::DEFAULT_CONFIG)]
    pub config: Vec<PathBuf>,
}

#[derive(serde::Serialize)]
struct Unit {
    file: String,
    text: String,
}

pub fn run(a: NetworkArgs) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(&a.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(profile) = cfg.profiles.get(&a.profile) else {
        let known: Vec<&str> = cfg.profiles.keys().map(String::as_str).collect();
        eprintln!("provd: no profile {:?} (known: {})", a.profile, known.join(", "));
        return Ok(ExitCode::FAILURE);
    };
    let Some(model) = &profile.network else {
        eprintln!(
            "provd: profile {:?} has no [profiles.{}.network]: its hosts get one bridge on the boot NIC",
            a.profile, a.profile
        );
        return Ok(ExitCode::FAILURE);
    };
    let addresses = BTreeMap::new();
    let lines = kickstart::network_lines(model, &addresses);
    let post = kickstart::post_script(model, &addresses);
    let units: Vec<Unit> = networkd::units(model, &addresses, None)
        .into_iter()
        .map(|(file, text)| Unit { file, text })
        .collect();
    if a.json {
        let out = serde_json::json!({
            "kickstart": { "lines": lines, "post": post },
            "networkd": units,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if a.format == "networkd" {
        for u in &units {
            println!("# /etc/systemd/network/{}\n{}", u.file, u.text);
        }
    } else {
        println!("{}\n%post\n{post}%end", lines.join("\n"));
    }
    Ok(ExitCode::SUCCESS)
}
