//! Blocking HTTP client for the operator API; turns error bodies into one
//! clear line.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use common::wire::{ErrorBody, API_PREFIX};

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Client {
    /// `ca_cert`: a PEM file trusted instead of the system's roots (the
    /// coordinator's `tls/cert.pem`).
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "coordinator URL {base:?} must start with http:// or https://"
        );
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
            builder = builder.tls_certs_only(roots);
        }
        let http = builder.build().context("building HTTP client")?;
        Ok(Client { base, token, http })
    }

    fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<T> {
        let bytes = self.send_raw(req, what)?;
        serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer to {what}"))
    }

    /// The answer's bytes as the coordinator sent them.
    fn send_raw(
        &self,
        req: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let token = self
            .token
            .as_deref()
            .context("no operator token: set VET_TOKEN (or --token) to the content of <data-dir>/operator.token")?;
        let resp = req
            .bearer_auth(token)
            .send()
            .with_context(|| format!("cannot reach coordinator at {}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .with_context(|| format!("reading answer to {what}"))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => anyhow::bail!("{} ({})", e.error.message, status.as_u16()),
            Err(_) => anyhow::bail!("{what}: HTTP {status}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path)), &format!("GET {path}"))
    }

    /// A GET whose answer is kept byte for byte (reports).
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.send_raw(self.http.get(self.url(path)), &format!("GET {path}"))
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(
            self.http.post(self.url(path)).json(body),
            &format!("POST {path}"),
        )
    }

    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(
            self.http.patch(self.url(path)).json(body),
            &format!("PATCH {path}"),
        )
    }
}
