//! The BMC credentials file (`[daemon] bmc_secrets`): TOML, one table per name that host
//! entries refer to (`bmc = { ..., credentials = "rack7" }`):
//!
//! ```toml
//! [credentials.rack7]
//! username = "admin"
//! password = "..."
//! ```
//!
//! Kept apart from the site configs (which are meant to be reviewed in git and copied
//! around) and refused unless only its owner can read it (0600 or 0400). A `Credential`
//! never prints its password (`Debug` redacts it) and nothing in provd logs or returns it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    #[serde(default)]
    credentials: BTreeMap<String, Credential>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("no BMC credentials file: set [daemon] bmc_secrets (a 0600 TOML file with [credentials.NAME] tables)")]
    NotConfigured,
    #[error("{path}: {1}", path = .0.display())]
    Unreadable(PathBuf, std::io::Error),
    #[error(
        "{path}: readable by group or others (mode {1:o}): BMC passwords must be 0600 (chmod 600 {path})",
        path = .0.display()
    )]
    TooOpen(PathBuf, u32),
    #[error("{path}: {1}", path = .0.display())]
    Invalid(PathBuf, SyntaxError),
    #[error("no credentials named {0:?} in the BMC credentials file")]
    Unknown(String),
}

/// Where the credentials file does not parse; never quotes the text (it holds passwords).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Default, Clone)]
pub struct Secrets {
    credentials: BTreeMap<String, Credential>,
}

impl Secrets {
    /// Read and check the file (read again at every use: an operator rotating a password
    /// needs no reload).
    pub fn load(path: Option<&Path>) -> Result<Secrets, SecretsError> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.ok_or(SecretsError::NotConfigured)?;
        let meta = std::fs::metadata(path).map_err(|e| SecretsError::Unreadable(path.into(), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::TooOpen(path.into(), mode));
        }
        let text = std::fs::read_to_string(path).map_err(|e| SecretsError::Unreadable(path.into(), e))?;
        Secrets::parse(&text).map_err(|e| SecretsError::Invalid(path.into(), e))
    }

    /// Parse the file's text; the error never quotes the text (it holds passwords).
    pub fn parse(text: &str) -> Result<Secrets, SyntaxError> {
        match toml::from_str::<FileWire>(text) {
            Ok(w) => Ok(Secrets {
                credentials: w.credentials,
            }),
            Err(e) => Err(SyntaxError {
                line: e
                    .span()
                    .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
                message: e.message().to_string(),
            }),
        }
    }

    pub fn get(&self, name: &str) -> Result<&Credential, SecretsError> {
        self.credentials
            .get(name)
            .ok_or_else(|| SecretsError::Unknown(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_owner_readable_files_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bmc.toml");
        std::fs::write(&p, "[credentials.lab]\nusername = \"admin\"\npassword = \"s3cret\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secrets::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("0600") && e.contains("644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secrets::load(Some(&p)).unwrap();
        let c = s.get("lab").unwrap();
        assert_eq!(c.username, "admin");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(s.get("other").unwrap_err().to_string().contains("\"other\""));
    }

    #[test]
    fn a_parse_error_does_not_quote_the_password() {
        let e = Secrets::parse("[credentials.lab]\nusername = \"a\"\npassword = \"hunter2\"\nextra = 1\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("line 4: "), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
