//! cloud-init NoCloud seeds for VMs that `provd vm deploy` creates: the first-boot identity
//! (instance-id, hostname, SSH keys, network config) served over HTTP on the site's boot
//! listener at `/nocloud/<token>/{meta-data,user-data,vendor-data,network-config}`.
//!
//! The guest finds the seed through its SMBIOS serial `ds=nocloud-net;s=<url>` (cloud-init
//! appends the file names to the URL, so it ends in `/`). The URL is the only secret: an
//! unguessable token, so one VM cannot read another's user-data by counting. Seeds are
//! stored durably (redb) before the URL is handed out, so a provd restart between deploy
//! and first boot loses nothing.

use crate::config::valid_hostname;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seed {
    pub instance_id: String,
    pub hostname: String,
    pub ssh_keys: Vec<String>,
    pub site: String,
    pub url: String,
}

/// What `POST /api/nocloud` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRequest {
    pub hostname: String,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Needed only when provd serves more than one site.
    #[serde(default)]
    pub site: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("hostname {0:?} is not a DNS name (letters, digits, '-' and '.', at most 253)")]
    BadHostname(String),
    #[error("SSH key {0} is not one line")]
    BadKey(usize),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// A YAML double-quoted scalar: JSON's string syntax is a subset of it.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

impl Seed {
    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            yaml_str(&self.instance_id),
            yaml_str(&self.hostname)
        )
    }

    pub fn user_data(&self) -> String {
        let mut s = format!("#cloud-config\nhostname: {}\n", yaml_str(&self.hostname));
        if !self.ssh_keys.is_empty() {
            s.push_str("ssh_authorized_keys:\n");
            for k in &self.ssh_keys {
                s.push_str(&format!("  - {}\n", yaml_str(k)));
            }
        }
        s
    }

    /// Network config version 2: DHCP on every Ethernet NIC (the deploy's NIC profile decides
    /// which bridges they are on; provd's DHCP serves them there).
    pub fn network_config(&self) -> String {
        "version: 2\nethernets:\n  all-ethernet:\n    match:\n      name: \"e*\"\n    dhcp4: true\n".into()
    }

    /// One of the NoCloud files by name.
    pub fn file(&self, name: &str) -> Option<String> {
        match name {
            "meta-data" => Some(self.meta_data()),
            "user-data" => Some(self.user_data()),
            "vendor-data" => Some("#cloud-config\n{}\n".into()),
            "network-config" => Some(self.network_config()),
            _ => None,
        }
    }
}

/// Every seed, by token; write-through to the store.
pub struct Registry {
    store: Store,
    seeds: RwLock<HashMap<String, Seed>>,
    /// New seeds, once durable (the failover partner's replication link sends them on).
    changes: tokio::sync::broadcast::Sender<(String, Seed)>,
}

impl Registry {
    pub fn load(store: Store) -> Result<Registry, crate::store::StoreError> {
        let mut seeds = HashMap::new();
        for (token, json) in store.load_nocloud()? {
            match serde_json::from_slice::<Seed>(&json) {
                Ok(seed) => {
                    seeds.insert(token, seed);
                }
                Err(e) => tracing::warn!("nocloud seed {token}: unreadable, skipped: {e}"),
            }
        }
        Ok(Registry {
            store,
            seeds: RwLock::new(seeds),
            changes: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Make and durably store a seed; `base_url` is the site's `http://addr:port`.
    /// Blocking (one fsync): call from `spawn_blocking`.
    pub fn create_blocking(&self, req: &SeedRequest, site: &str, base_url: &str) -> Result<Seed, SeedError> {
        if !valid_hostname(&req.hostname) {
            return Err(SeedError::BadHostname(req.hostname.clone()));
        }
        if let Some(i) = req.ssh_keys.iter().position(|k| k.contains('\n') || k.contains('\r')) {
            return Err(SeedError::BadKey(i));
        }
        let token = crate::random::token();
        let seed = Seed {
            instance_id: format!("i-{}", &token[..16]),
            hostname: req.hostname.clone(),
            ssh_keys: req.ssh_keys.clone(),
            site: site.into(),
            url: format!("{base_url}/nocloud/{token}/"),
        };
        let json = serde_json::to_vec(&seed).expect("a seed serialises");
        self.store.put_nocloud_blocking(&token, &json)?;
        self.seeds
            .write()
            .expect("seed lock")
            .insert(token.clone(), seed.clone());
        let _ = self.changes.send((token, seed.clone()));
        Ok(seed)
    }

    /// New seeds made here, once durable.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(String, Seed)> {
        self.changes.subscribe()
    }

    /// Every seed with its token (the replication link's full dump).
    pub fn entries(&self) -> Vec<(String, Seed)> {
        self.seeds
            .read()
            .expect("seed lock")
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect()
    }

    /// A seed the partner made: kept if we lack it (seeds never change). Blocking.
    pub fn apply_remote_blocking(&self, token: &str, seed: Seed) -> Result<bool, crate::store::StoreError> {
        if self.get(token).is_some() {
            return Ok(false);
        }
        let json = serde_json::to_vec(&seed).expect("a seed serialises");
        self.store.put_nocloud_blocking(token, &json)?;
        self.seeds.write().expect("seed lock").insert(token.to_string(), seed);
        Ok(true)
    }

    pub fn get(&self, token: &str) -> Option<Seed> {
        self.seeds.read().expect("seed lock").get(token).cloned()
    }

    pub fn all(&self) -> Vec<Seed> {
        let mut v: Vec<Seed> = self.seeds.read().expect("seed lock").values().cloned().collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_render_quoted_yaml_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reg = Registry::load(store.clone()).unwrap();
        let seed = reg
            .create_blocking(
                &SeedRequest {
                    hostname: "web1".into(),
                    ssh_keys: vec!["ssh-ed25519 AAAA: \"quoted\" me@x".into()],
                    site: None,
                },
                "dc1",
                "http://10.0.0.1:8080",
            )
            .unwrap();
        assert!(seed.url.starts_with("http://10.0.0.1:8080/nocloud/") && seed.url.ends_with('/'));
        assert!(seed.meta_data().contains("local-hostname: \"web1\""));
        assert!(
            seed.user_data()
                .contains("  - \"ssh-ed25519 AAAA: \\\"quoted\\\" me@x\""),
            "{}",
            seed.user_data()
        );
        assert!(seed.file("passwd").is_none());
        let token = seed.url.trim_end_matches('/').rsplit('/').next().unwrap().to_string();
        drop(reg);
        let again = Registry::load(store).unwrap();
        assert_eq!(again.get(&token), Some(seed));

        assert!(matches!(
            again.create_blocking(
                &SeedRequest {
                    hostname: "bad_name".into(),
                    ssh_keys: vec![],
                    site: None
                },
                "dc1",
                "http://x"
            ),
            Err(SeedError::BadHostname(_))
        ));
        assert!(matches!(
            again.create_blocking(
                &SeedRequest {
                    hostname: "ok".into(),
                    ssh_keys: vec!["a\nb".into()],
                    site: None
                },
                "dc1",
                "http://x"
            ),
            Err(SeedError::BadKey(0))
        ));
    }
}
