//! Talking to the daemon's API from the command line (blocking HTTP; the CLI has no runtime).
//! Every request carries the admin API's bearer token when the CLI has one (read from the
//! daemon's `<state_dir>/api-token`, or `--token-file`).

use anyhow::Context;
use std::time::Duration;

pub enum Fetch<T> {
    Ok(T),
    /// Nothing listens at the address: the daemon is not running.
    NoDaemon,
}

/// `name` as one URL path segment (`http::url_segment`).
pub fn segment(name: &str) -> String {
    crate::http::url_segment(name)
}

fn agent(tls: Option<ureq::tls::TlsConfig>, timeout: Duration) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false);
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

/// HTTPS to an `api_tls` daemon: trust provd's CA (`cacert.pem` in `dir`, as `provd pki
/// issue-client` writes it) and present the admin certificate there when there is one.
pub fn tls_from_dir(dir: &std::path::Path) -> anyhow::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let read =
        |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()));
    let ca = Certificate::from_pem(&read("cacert.pem")?).with_context(|| format!("{}/cacert.pem", dir.display()))?;
    let mut tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[ca]));
    if dir.join("clientcert.pem").exists() {
        let cert = Certificate::from_pem(&read("clientcert.pem")?)
            .with_context(|| format!("{}/clientcert.pem", dir.display()))?;
        let key = PrivateKey::from_pem(&read("clientkey.pem")?)
            .with_context(|| format!("{}/clientkey.pem", dir.display()))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    Ok(tls.build())
}

/// The daemon's API: where it is and the credential to present.
pub struct Api {
    pub base: String,
    token: Option<String>,
    /// Where the token was (or would have been) read, for error messages.
    token_source: String,
    agent: ureq::Agent,
    /// For requests that run long on the daemon (a drain).
    patient: ureq::Agent,
}

impl Api {
    pub fn with_tls(
        base: String,
        token: Option<String>,
        token_source: String,
        tls: Option<ureq::tls::TlsConfig>,
    ) -> Api {
        Api {
            base,
            token,
            token_source,
            agent: agent(tls.clone(), Duration::from_secs(10)),
            patient: agent(tls, Duration::from_secs(3600)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<Fetch<T>> {
        let url = self.url(path);
        self.classify(&url, self.request(self.agent.get(&url)).call())
    }

    pub fn post<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<Fetch<T>> {
        let url = self.url(path);
        self.classify(&url, self.request(self.agent.post(&url)).send_empty())
    }

    /// POST without a body to a route that may take long (up to an hour).
    pub fn post_long<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<Fetch<T>> {
        let url = self.url(path);
        self.classify(&url, self.request(self.patient.post(&url)).send_empty())
    }

    /// POST a JSON body, decode a JSON answer.
    pub fn post_body<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Fetch<T>> {
        self.post_json(&self.agent, path, body)
    }

    /// POST a JSON body to a route that may take long (up to an hour).
    pub fn post_body_long<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Fetch<T>> {
        self.post_json(&self.patient, path, body)
    }

    fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Fetch<T>> {
        let url = self.url(path);
        let body = serde_json::to_string(body)?;
        self.classify(
            &url,
            self.request(agent.post(&url))
                .header("content-type", "application/json")
                .send(body.as_str()),
        )
    }

    /// A missing daemon is an error telling what to do.
    pub fn require<T>(&self, f: Fetch<T>) -> anyhow::Result<T> {
        require(&self.base, f)
    }

    fn classify<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Fetch<T>> {
        if let Ok(resp) = &r
            && resp.status() == 401
        {
            anyhow::bail!(
                "{url}: the daemon wants its admin API token ({}): run this as a user who can read it, or pass --token-file",
                match &self.token {
                    Some(_) => format!("the one from {} was refused", self.token_source),
                    None => format!("none could be read from {}", self.token_source),
                }
            );
        }
        classify(url, r)
    }
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
                // The API's errors are {"error": "..."}: say the sentence, not the JSON.
                #[derive(serde::Deserialize)]
                struct Refusal {
                    error: String,
                }
                let said = serde_json::from_str::<Refusal>(&body)
                    .map(|r| r.error)
                    .unwrap_or_else(|_| body.trim().to_string());
                anyhow::bail!("{said} (HTTP {status} from {url})");
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

/// A missing daemon is an error telling what to do.
pub fn require<T>(base: &str, f: Fetch<T>) -> anyhow::Result<T> {
    match f {
        Fetch::Ok(v) => Ok(v),
        Fetch::NoDaemon => anyhow::bail!("no daemon answers at {base} (is `provd serve` running? use --server)"),
    }
}
