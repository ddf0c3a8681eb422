//! HTTP client for the run-token routes (reqwest + rustls). Decides which
//! answers are worth retrying: connect errors, 408, 429 and 5xx are;
//! any other 4xx is a bug on one side and is returned as `Rejected`.

use std::sync::RwLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::trust::Trust;

use common::wire::{
    ClaimRequest, ClaimResponse, ErrorBody, HostHeartbeat, HostHeartbeatAck, API_PREFIX,
};

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Worth retrying: the coordinator was unreachable or busy.
    #[error("coordinator unreachable or busy: {0}")]
    Transient(String),
    /// The server's certificate is not the pinned one: nothing was sent.
    #[error("{server} presented a certificate with SHA-256 {sha256}, not the pinned one; nothing was sent")]
    Untrusted { server: String, sha256: String },
    /// The coordinator refused the request; retrying will not help.
    #[error("coordinator refused ({status}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
        expected_seq: Option<u64>,
    },
}

impl UplinkError {
    /// The coordinator says the run has ended (`409 run_finished`): it
    /// takes nothing more for it.
    pub fn is_run_finished(&self) -> bool {
        matches!(self, UplinkError::Rejected { code, .. } if code == "run_finished")
    }
}

pub struct Client {
    http: reqwest::Client,
    /// The certificate a pin refused last (SHA-256), if any.
    refused: super::trust::Refused,
    base: String,
    token: RwLock<String>,
    run_id: RwLock<i64>,
}

impl Client {
    pub fn new(base: &str, trust: &Trust) -> Result<Client, UplinkError> {
        let refused = super::trust::Refused::default();
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            // Below the coordinator's 10 s idle close, so a pooled
            // connection is not reused just as the server drops it.
            .pool_idle_timeout(Duration::from_secs(8));
        let builder = match trust {
            Trust::System => builder,
            Trust::Pin(pin) => {
                let config = super::trust::pinned_config(*pin, refused.clone())
                    .map_err(UplinkError::Transient)?;
                builder.tls_backend_preconfigured(config)
            }
            Trust::CaFile(pem) => {
                let roots = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| UplinkError::Transient(format!("reading the CA file: {e}")))?;
                builder.tls_certs_only(roots)
            }
        };
        let http = builder.build().map_err(|e| {
            // reqwest's own text is only "builder error"; the cause
            // (e.g. no CA certificates on this system) is in the chain.
            let mut text = format!("building HTTP client: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            UplinkError::Transient(text)
        })?;
        Ok(Client {
            http,
            refused,
            base: base.trim_end_matches('/').to_string(),
            token: RwLock::new(String::new()),
            run_id: RwLock::new(0),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn run_id(&self) -> i64 {
        *self.run_id.read().unwrap_or_else(|p| p.into_inner())
    }

    async fn answer<T: DeserializeOwned>(
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, UplinkError> {
        let resp = resp.map_err(|e| UplinkError::Transient(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| UplinkError::Transient(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| UplinkError::Rejected {
                status: status.as_u16(),
                code: "bad_answer".into(),
                message: format!("answer not understood: {e}"),
                expected_seq: None,
            });
        }
        let s = status.as_u16();
        if s == 408 || s == 429 || status.is_server_error() {
            return Err(UplinkError::Transient(format!("HTTP {status}")));
        }
        let (code, message, expected_seq) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (b.error.code, b.error.message, b.error.expected_seq),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&bytes).into_owned(),
                None,
            ),
        };
        Err(UplinkError::Rejected {
            status: s,
            code,
            message,
            expected_seq,
        })
    }

    /// Claims a run; on success the client carries its id and token.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, UplinkError> {
        let resp = self
            .http
            .post(format!("{}{API_PREFIX}/claim", self.base))
            .json(req)
            .send()
            .await;
        let claim: ClaimResponse = self.pinned(Self::answer(resp).await)?;
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = claim.token.clone();
        *self.run_id.write().unwrap_or_else(|p| p.into_inner()) = claim.run_id;
        Ok(claim)
    }

    /// A failed connection whose cause was the pin refusing the server's
    /// certificate, said as [`UplinkError::Untrusted`] (the requests that
    /// report it: the claim and the host heartbeat, before any run data).
    fn pinned<T>(&self, answer: Result<T, UplinkError>) -> Result<T, UplinkError> {
        match answer {
            Err(UplinkError::Transient(why)) => {
                Err(self.untrusted().unwrap_or(UplinkError::Transient(why)))
            }
            other => other,
        }
    }

    /// The pin refused the server's certificate since the last call.
    pub fn untrusted(&self) -> Option<UplinkError> {
        let got = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some(UplinkError::Untrusted {
            server: self.base.clone(),
            sha256: got,
        })
    }

    /// Uses `token` (a host-mode token) for the host routes.
    pub fn set_token(&self, token: &str) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token.to_string();
    }

    /// A host-mode heartbeat, with the host token set by [`Client::set_token`].
    pub async fn host_heartbeat(
        &self,
        hb: &HostHeartbeat,
    ) -> Result<HostHeartbeatAck, UplinkError> {
        let resp = self
            .http
            .post(format!("{}{API_PREFIX}/host/heartbeat", self.base))
            .bearer_auth(self.token())
            .json(hb)
            .send()
            .await;
        self.pinned(Self::answer(resp).await)
    }

    fn run_url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}/runs/{}{path}", self.base, self.run_id())
    }

    fn token(&self) -> String {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, UplinkError> {
        let resp = self
            .http
            .post(self.run_url(path))
            .bearer_auth(self.token())
            .json(body)
            .send()
            .await;
        Self::answer(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, UplinkError> {
        let resp = self
            .http
            .get(self.run_url(path))
            .bearer_auth(self.token())
            .send()
            .await;
        Self::answer(resp).await
    }

    pub async fn upload<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        bytes: Vec<u8>,
    ) -> Result<T, UplinkError> {
        let resp = self
            .http
            .post(self.run_url(path_and_query))
            .bearer_auth(self.token())
            .body(bytes)
            .send()
            .await;
        Self::answer(resp).await
    }
}
