//! Talking to the daemon's API from the command line (blocking HTTP; the CLI has no runtime).

use anyhow::Context;
use std::time::Duration;

pub enum Fetch<T> {
    Ok(T),
    /// Nothing listens at the address: the daemon is not running.
    NoDaemon,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn classify<T: serde::de::DeserializeOwned>(
    url: &str,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<Fetch<T>> {
    match r {
        Ok(mut resp) => {
            let status = resp.status();
            let body = resp
                .body_mut()
                .read_to_string()
                .with_context(|| format!("reading {url}"))?;
            if status == 404 {
                anyhow::bail!("not found: {url}");
            }
            if !status.is_success() {
                anyhow::bail!("{url}: HTTP {status}: {}", body.trim());
            }
            Ok(Fetch::Ok(
                serde_json::from_str(&body).with_context(|| format!("decoding {url}"))?,
            ))
        }
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(Fetch::NoDaemon),
        Err(ureq::Error::ConnectionFailed) => Ok(Fetch::NoDaemon),
        Err(e) => Err(anyhow::anyhow!("{url}: {e}")),
    }
}

pub fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<Fetch<T>> {
    classify(url, agent().get(url).call())
}

pub fn post_json<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<Fetch<T>> {
    classify(url, agent().post(url).send_empty())
}

/// POST a JSON body, decode a JSON answer.
pub fn post_json_body<T: serde::de::DeserializeOwned>(
    url: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<Fetch<T>> {
    let body = serde_json::to_string(body)?;
    classify(
        url,
        agent()
            .post(url)
            .header("content-type", "application/json")
            .send(body.as_str()),
    )
}

/// Like `get_json`/`post_json` but a missing daemon is an error telling what to do.
pub fn require<T>(base: &str, f: Fetch<T>) -> anyhow::Result<T> {
    match f {
        Fetch::Ok(v) => Ok(v),
        Fetch::NoDaemon => anyhow::bail!("no daemon answers at {base} (is `provd serve` running? use --server)"),
    }
}
