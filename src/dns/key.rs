//! The TSIG key of a site's DNS updates, read from the file `tsig-keygen` writes (and BIND's
//! `include` reads), so the operator makes one key and both sides load the same file:
//!
//! ```text
//! key "provd-a" {
//!     algorithm hmac-sha256;
//!     secret "base64...";
//! };
//! ```
//!
//! Only the algorithms ring computes are accepted (HMAC-SHA256/384/512). The file holds a
//! secret, so it must not be readable by group or others: a key anyone on the host can read
//! lets anyone rewrite the site's names.

use base64::Engine;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A TSIG key: its name (as the server knows it), algorithm and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    /// Never the secret (keys end up in logs through `{:?}` otherwise).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{file}: {why}")]
    Unreadable { file: String, why: String },
    #[error("{file}: mode {mode:o} lets group or others read the TSIG secret; chmod 600 it")]
    Exposed { file: String, mode: u32 },
    #[error("{file}: {why}")]
    Malformed { file: String, why: String },
}

/// Read and parse `file`, refusing one that group or others can read.
pub fn load(file: &Path) -> Result<TsigKey, KeyError> {
    let name = file.display().to_string();
    let meta = std::fs::metadata(file).map_err(|e| KeyError::Unreadable {
        file: name.clone(),
        why: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed { file: name, mode });
    }
    let text = std::fs::read_to_string(file).map_err(|e| KeyError::Unreadable {
        file: name.clone(),
        why: e.to_string(),
    })?;
    parse(&text).map_err(|why| KeyError::Malformed { file: name, why })
}

/// Parse one `key "NAME" { algorithm ALG; secret "BASE64"; };` statement.
pub fn parse(text: &str) -> Result<TsigKey, String> {
    let tokens = tokenize(text)?;
    let mut t = tokens.iter().map(String::as_str);
    if t.next() != Some("key") {
        return Err("expected a `key \"NAME\" { ... };` statement".into());
    }
    let name = t.next().ok_or("the key has no name")?.to_string();
    if t.next() != Some("{") {
        return Err("expected `{` after the key's name".into());
    }
    let (mut algorithm, mut secret) = (None, None);
    loop {
        match t.next() {
            Some("}") => break,
            Some("algorithm") => algorithm = Some(statement_value(&mut t, "algorithm")?),
            Some("secret") => secret = Some(statement_value(&mut t, "secret")?),
            Some(other) => return Err(format!("unknown key clause {other:?}")),
            None => return Err("the key statement is not closed with `};`".into()),
        }
    }
    let algorithm = match algorithm
        .ok_or("the key has no algorithm")?
        .to_ascii_lowercase()
        .as_str()
    {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(format!(
                "algorithm {other}: use hmac-sha256, hmac-sha384 or hmac-sha512"
            ));
        }
    };
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.ok_or("the key has no secret")?)
        .map_err(|e| format!("the secret is not base64: {e}"))?;
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(TsigKey {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        algorithm,
        secret,
    })
}

fn statement_value<'a>(t: &mut impl Iterator<Item = &'a str>, clause: &str) -> Result<String, String> {
    let value = t.next().ok_or_else(|| format!("{clause} has no value"))?;
    if t.next() != Some(";") {
        return Err(format!("expected `;` after {clause}"));
    }
    Ok(value.to_string())
}

/// Words, quoted strings (without their quotes) and the punctuation `{ } ;`; comments in
/// the three styles named.conf allows (`#`, `//`, `/* */`) are skipped.
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                loop {
                    match chars.next() {
                        Some('/') if last == '*' => break,
                        Some(c) => last = c,
                        None => return Err("a /* comment is not closed".into()),
                    }
                }
            }
            '{' | '}' | ';' => out.push(c.to_string()),
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => return Err("a quoted string is not closed".into()),
                    }
                }
                out.push(s);
            }
            c => {
                let mut s = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars>) {
    for c in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tsig-keygen -a hmac-sha256 provd-a` prints (this secret is made up).
    const KEYGEN: &str =
        "key \"provd-a\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LWJ5dGVzLWZvci10ZXN0aW5nLW9ubHk=\";\n};\n";

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let k = parse(KEYGEN).unwrap();
        assert_eq!(k.name, "provd-a");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(k.secret, b"secret-bytes-for-testing-only");
        let commented = format!("# made by tsig-keygen\n/* a\n comment */ // here\n{KEYGEN}");
        assert_eq!(parse(&commented).unwrap(), k);
        assert!(!format!("{k:?}").contains("c2Vj"), "Debug never shows the secret");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let md5 = KEYGEN.replace("hmac-sha256", "hmac-md5");
        assert!(parse(&md5).unwrap_err().contains("use hmac-sha256"));
        assert!(
            parse(&KEYGEN.replace("secret \"c2Vj", "secret \"!!!"))
                .unwrap_err()
                .contains("base64")
        );
        assert!(parse(&KEYGEN.replace("};", "")).unwrap_err().contains("not closed"));
        assert!(parse("zone \"x\" {};").is_err());
        assert!(
            parse(&KEYGEN.replace("algorithm", "algo"))
                .unwrap_err()
                .contains("unknown key clause")
        );
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.key");
        std::fs::write(&file, KEYGEN).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&file), Err(KeyError::Exposed { mode: 0o644, .. })));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&file).unwrap().name, "provd-a");
        assert!(matches!(
            load(&dir.path().join("none")),
            Err(KeyError::Unreadable { .. })
        ));
    }
}
