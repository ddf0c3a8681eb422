//! Coordinator configuration in two stages: [`RawConfig`] collects what was
//! given (TOML file < `VET_*` environment < flags), [`Config::resolve`]
//! checks it and fails with a message that names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use common::wire::Power;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Seconds without a heartbeat before a running run is aborted.
    pub heartbeat_timeout_s: Option<u64>,
    /// Seconds a failed host stays held before it is powered off.
    pub hold_timeout_s: Option<u64>,
    /// Days artifact files are kept (0: forever).
    pub artifact_retention_days: Option<u64>,
    /// Power action after a pass: none or poweroff.
    pub pass_power: Option<String>,
    /// Largest request body (measurement batches, JSON), bytes.
    pub max_body_bytes: Option<usize>,
    /// Largest artifact upload, bytes.
    pub max_artifact_bytes: Option<u64>,
    /// iperf3 server ports handed to agents.
    pub iperf3_ports: Option<Vec<u16>>,
    /// Address agents use for iperf3 (default: the coordinator's host).
    pub iperf3_host: Option<String>,
    /// Serve `/metrics` without the operator token.
    pub metrics_public: Option<bool>,
    /// URLs POSTed a JSON notification when a run is held or ends.
    pub webhooks: Option<Vec<String>>,
    /// Tries per notification before it becomes a dead letter.
    pub webhook_max_attempts: Option<u32>,
    /// First retry delay, seconds; doubled per failed try (at most an hour).
    pub webhook_backoff_s: Option<u64>,
    /// Claims per second one source address may make on average.
    pub claim_rate: Option<f64>,
    /// Claims one source address may make at once.
    pub claim_burst: Option<u32>,
    /// Serve HTTPS only.
    pub tls: Option<bool>,
    /// PEM certificate (chain) and key; without them a self-signed pair is
    /// made under `<data-dir>/tls/` on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Extra names (DNS or IP) for the self-signed certificate.
    pub tls_san: Option<Vec<String>>,
    /// Open connections at most; more wait in the listen queue.
    pub max_connections: Option<usize>,
    /// `"breaches"` (default): a threshold evaluation row only for a
    /// breach, passes counted; `"all"`: the seed's row per evaluation.
    pub evaluations: Option<String>,
}

impl RawConfig {
    pub fn from_toml_file(path: &Path) -> anyhow::Result<RawConfig> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// Overlays `VET_*` variables (as given by `get`) on this config.
    pub fn overlay_env(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<RawConfig> {
        use anyhow::Context;
        fn num<T: std::str::FromStr>(name: &str, v: String) -> anyhow::Result<T> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number"))
        }
        if let Some(v) = get("VET_LISTEN") {
            self.listen = Some(v);
        }
        if let Some(v) = get("VET_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = get("VET_HEARTBEAT_TIMEOUT_S") {
            self.heartbeat_timeout_s = Some(num("VET_HEARTBEAT_TIMEOUT_S", v)?);
        }
        if let Some(v) = get("VET_ARTIFACT_RETENTION_DAYS") {
            self.artifact_retention_days = Some(num("VET_ARTIFACT_RETENTION_DAYS", v)?);
        }
        if let Some(v) = get("VET_HOLD_TIMEOUT_S") {
            self.hold_timeout_s = Some(num("VET_HOLD_TIMEOUT_S", v)?);
        }
        if let Some(v) = get("VET_PASS_POWER") {
            self.pass_power = Some(v);
        }
        if let Some(v) = get("VET_MAX_BODY_BYTES") {
            self.max_body_bytes = Some(num("VET_MAX_BODY_BYTES", v)?);
        }
        if let Some(v) = get("VET_MAX_ARTIFACT_BYTES") {
            self.max_artifact_bytes = Some(num("VET_MAX_ARTIFACT_BYTES", v)?);
        }
        if let Some(v) = get("VET_IPERF3_PORTS") {
            let ports = v
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().parse::<u16>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("VET_IPERF3_PORTS={v:?}: want comma-separated ports"))?;
            self.iperf3_ports = Some(ports);
        }
        if let Some(v) = get("VET_METRICS_PUBLIC") {
            self.metrics_public = Some(match v.as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => anyhow::bail!("VET_METRICS_PUBLIC={v:?}: want true or false"),
            });
        }
        if let Some(v) = get("VET_WEBHOOKS") {
            self.webhooks = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
        if let Some(v) = get("VET_WEBHOOK_MAX_ATTEMPTS") {
            self.webhook_max_attempts = Some(num("VET_WEBHOOK_MAX_ATTEMPTS", v)?);
        }
        if let Some(v) = get("VET_WEBHOOK_BACKOFF_S") {
            self.webhook_backoff_s = Some(num("VET_WEBHOOK_BACKOFF_S", v)?);
        }
        if let Some(v) = get("VET_CLAIM_RATE") {
            self.claim_rate = Some(num("VET_CLAIM_RATE", v)?);
        }
        if let Some(v) = get("VET_CLAIM_BURST") {
            self.claim_burst = Some(num("VET_CLAIM_BURST", v)?);
        }
        if let Some(v) = get("VET_TLS") {
            self.tls = Some(match v.as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => anyhow::bail!("VET_TLS={v:?}: want true or false"),
            });
        }
        if let Some(v) = get("VET_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = get("VET_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        if let Some(v) = get("VET_TLS_SAN") {
            self.tls_san = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
        if let Some(v) = get("VET_MAX_CONNECTIONS") {
            self.max_connections = Some(num("VET_MAX_CONNECTIONS", v)?);
        }
        if let Some(v) = get("VET_EVALUATIONS") {
            self.evaluations = Some(v);
        }
        if let Some(v) = get("VET_IPERF3_HOST") {
            self.iperf3_host = Some(v);
        }
        Ok(self)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub heartbeat_timeout: Duration,
    /// How long a failed host stays held (then: power off, Failed, event).
    pub hold_timeout: Duration,
    /// How long artifact files are kept; `None` keeps them forever.
    pub artifact_retention: Option<Duration>,
    pub pass_power: Power,
    pub max_body_bytes: usize,
    pub max_artifact_bytes: u64,
    pub iperf3_ports: Vec<u16>,
    pub iperf3_host: Option<String>,
    /// `/metrics` answers without the operator token.
    pub metrics_public: bool,
    /// Notified (POST, JSON) when a run is held or ends; http or https.
    pub webhooks: Vec<String>,
    pub webhook_max_attempts: u32,
    /// Delay before the first retry; doubled per failure, at most an hour.
    pub webhook_backoff: Duration,
    /// Claims per second per source address, on average.
    pub claim_rate: f64,
    /// Claims per source address at once.
    pub claim_burst: u32,
    /// HTTPS only, with this identity; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Open connections at most (the daemon raises its open-file limit).
    pub max_connections: usize,
    /// Which threshold evaluations get a row.
    pub evaluations: crate::store::Evaluations,
}

/// `serve --tls`: the operator's certificate and key, or (both `None`) a
/// self-signed pair with these extra names.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub sans: Vec<String>,
}

impl Config {
    /// Defaults for a data directory (what tests use).
    pub fn for_data_dir(dir: &Path) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            data_dir: dir.to_path_buf(),
            heartbeat_timeout: Duration::from_secs(120),
            hold_timeout: Duration::from_secs(24 * 3600),
            artifact_retention: Some(Duration::from_secs(30 * 86400)),
            pass_power: Power::None,
            max_body_bytes: 4 << 20,
            max_artifact_bytes: 256 << 20,
            iperf3_ports: Vec::new(),
            iperf3_host: None,
            metrics_public: false,
            webhooks: Vec::new(),
            webhook_max_attempts: 10,
            webhook_backoff: Duration::from_secs(5),
            claim_rate: 20.0,
            claim_burst: 100,
            tls: None,
            max_connections: 4096,
            evaluations: Default::default(),
        }
    }

    pub fn resolve(raw: RawConfig) -> anyhow::Result<Config> {
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("./var"));
        let mut c = Config::for_data_dir(&data_dir);
        if let Some(l) = raw.listen {
            c.listen = l
                .parse()
                .map_err(|_| anyhow::anyhow!("listen: {l:?} is not IP:PORT"))?;
        }
        if let Some(t) = raw.heartbeat_timeout_s {
            anyhow::ensure!(
                t >= 5,
                "heartbeat_timeout_s: {t} is below the minimum of 5 seconds"
            );
            c.heartbeat_timeout = Duration::from_secs(t);
        }
        if let Some(t) = raw.hold_timeout_s {
            anyhow::ensure!(
                t >= 60,
                "hold_timeout_s: {t} is below the minimum of 60 seconds"
            );
            c.hold_timeout = Duration::from_secs(t);
        }
        if let Some(d) = raw.artifact_retention_days {
            c.artifact_retention = (d > 0).then(|| Duration::from_secs(d * 86400));
        }
        if let Some(p) = raw.pass_power {
            c.pass_power = match p.as_str() {
                "none" => Power::None,
                "poweroff" => Power::Poweroff,
                _ => anyhow::bail!("pass_power: {p:?} is not none or poweroff"),
            };
        }
        if let Some(b) = raw.max_body_bytes {
            anyhow::ensure!(b >= 1024, "max_body_bytes: {b} is too small");
            c.max_body_bytes = b;
        }
        if let Some(b) = raw.max_artifact_bytes {
            c.max_artifact_bytes = b;
        }
        if let Some(p) = raw.iperf3_ports {
            c.iperf3_ports = p;
        }
        c.iperf3_host = raw.iperf3_host;
        c.metrics_public = raw.metrics_public.unwrap_or(false);
        for url in raw.webhooks.unwrap_or_default() {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| anyhow::anyhow!("webhooks: {url:?} is not a URL: {e}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
                "webhooks: {url:?} is not an http or https URL"
            );
            c.webhooks.push(url);
        }
        if let Some(n) = raw.webhook_max_attempts {
            anyhow::ensure!(n >= 1, "webhook_max_attempts: must be at least 1");
            c.webhook_max_attempts = n;
        }
        if let Some(s) = raw.webhook_backoff_s {
            anyhow::ensure!(s >= 1, "webhook_backoff_s: must be at least 1 second");
            c.webhook_backoff = Duration::from_secs(s);
        }
        if let Some(r) = raw.claim_rate {
            anyhow::ensure!(
                r.is_finite() && r >= 0.01,
                "claim_rate: {r} is below the minimum of 0.01 claims per second"
            );
            c.claim_rate = r;
        }
        if let Some(b) = raw.claim_burst {
            anyhow::ensure!(b >= 1, "claim_burst: must be at least 1");
            c.claim_burst = b;
        }
        if let Some(e) = &raw.evaluations {
            c.evaluations = e.parse().map_err(|m| anyhow::anyhow!("evaluations: {m}"))?;
        }
        if let Some(n) = raw.max_connections {
            anyhow::ensure!(n >= 16, "max_connections: {n} is below the minimum of 16");
            c.max_connections = n;
        }
        let given = raw.tls_cert.is_some() || raw.tls_key.is_some() || raw.tls_san.is_some();
        if raw.tls.unwrap_or(false) {
            anyhow::ensure!(
                raw.tls_cert.is_some() == raw.tls_key.is_some(),
                "tls_cert and tls_key: give both or neither (neither makes a self-signed pair)"
            );
            c.tls = Some(TlsConfig {
                cert: raw.tls_cert,
                key: raw.tls_key,
                sans: raw.tls_san.unwrap_or_default(),
            });
        } else {
            anyhow::ensure!(!given, "tls_cert, tls_key and tls_san need tls (--tls)");
        }
        Ok(c)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("vetting.db")
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }

    pub fn operator_token_path(&self) -> PathBuf {
        self.data_dir.join("operator.token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_errors_name_the_setting() {
        let raw: RawConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nheartbeat_timeout_s = 60").unwrap();
        let raw = raw
            .overlay_env(|k| match k {
                "VET_LISTEN" => Some("127.0.0.1:9001".into()),
                "VET_IPERF3_PORTS" => Some("5201,5202".into()),
                _ => None,
            })
            .unwrap();
        let c = Config::resolve(raw).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(c.iperf3_ports, vec![5201, 5202]);
        let err = Config::resolve(RawConfig {
            pass_power: Some("reboot".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("pass_power"), "{err}");
        let err = RawConfig::default()
            .overlay_env(|k| (k == "VET_HEARTBEAT_TIMEOUT_S").then(|| "soon".into()))
            .unwrap_err();
        assert!(err.to_string().contains("VET_HEARTBEAT_TIMEOUT_S"), "{err}");
        assert!(toml::from_str::<RawConfig>("lisen = 1").is_err());
    }

    #[test]
    fn evaluations_are_breaches_by_default_all_on_request_and_nothing_else() {
        let c = Config::resolve(RawConfig::default()).unwrap();
        assert_eq!(c.evaluations, crate::store::Evaluations::Breaches);
        let raw: RawConfig = toml::from_str("evaluations = \"all\"").unwrap();
        assert_eq!(
            Config::resolve(raw).unwrap().evaluations,
            crate::store::Evaluations::All
        );
        let raw = RawConfig::default()
            .overlay_env(|k| (k == "VET_EVALUATIONS").then(|| "passes".into()))
            .unwrap();
        let err = Config::resolve(raw).unwrap_err().to_string();
        assert!(
            err.starts_with("evaluations:") && err.contains("\"passes\""),
            "{err}"
        );
    }

    #[test]
    fn webhooks_come_from_the_file_or_the_environment_and_must_be_http() {
        let raw: RawConfig =
            toml::from_str("webhooks = [\"https://hooks.example/a\"]\nwebhook_backoff_s = 30")
                .unwrap();
        let c = Config::resolve(raw.clone()).unwrap();
        assert_eq!(c.webhooks, vec!["https://hooks.example/a".to_string()]);
        assert_eq!(c.webhook_backoff, Duration::from_secs(30));
        assert_eq!(c.webhook_max_attempts, 10);
        let raw = raw
            .overlay_env(|k| {
                (k == "VET_WEBHOOKS").then(|| " http://127.0.0.1:9/x , http://[::1]:9/y".into())
            })
            .unwrap();
        assert_eq!(
            Config::resolve(raw).unwrap().webhooks,
            vec!["http://127.0.0.1:9/x", "http://[::1]:9/y"]
        );
        for bad in ["ftp://host/x", "not a url", "file:///etc/passwd"] {
            let err = Config::resolve(RawConfig {
                webhooks: Some(vec![bad.into()]),
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().starts_with("webhooks:"), "{bad}: {err}");
        }
        let err = Config::resolve(RawConfig {
            webhook_max_attempts: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("webhook_max_attempts"), "{err}");
    }
}
