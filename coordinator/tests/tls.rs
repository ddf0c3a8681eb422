//! `vet-coordinator serve --tls` as an operator runs it: the self-signed
//! certificate made on first start, its pin, HTTPS only, `vetctl` with
//! `VET_CA_CERT`; and the HTTP edge's bounds against slow clients.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::{free_port, wait_until, TestCoordinator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_tls(dir: &Path, port: u16) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vet-coordinator"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VET_")) {
        cmd.env_remove(k);
    }
    let child = cmd
        .args(["serve", "--tls", "--tls-san", "vet.test", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child)
}

fn vetctl(base: &str, token: &str, ca: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vetctl"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VET_")) {
        cmd.env_remove(k);
    }
    cmd.env("VET_COORDINATOR", base).env("VET_TOKEN", token);
    if let Some(ca) = ca {
        cmd.env("VET_CA_CERT", ca);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn wait_for_pin(dir: &Path) -> String {
    let path = dir.join("tls/cert.sha256");
    wait_until("tls/cert.sha256", Duration::from_secs(30), || {
        let path = path.clone();
        async move { std::fs::read_to_string(&path).ok() }
    })
    .await
}

#[tokio::test]
async fn serve_tls_makes_a_pinned_certificate_once_and_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = serve_tls(dir.path(), port);
    let pin = wait_for_pin(dir.path()).await;
    assert!(
        pin.len() == 65
            && pin.ends_with('\n')
            && pin[..64]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{pin:?}"
    );
    let key_mode = std::fs::metadata(dir.path().join("tls/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // The pin is the SHA-256 of the certificate's DER form.
    let pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
    let der = pem_body(&pem);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&der)), pin.trim());

    let cert = dir.path().join("tls/cert.pem");
    let https = format!("https://127.0.0.1:{port}");
    let token = wait_until("the operator token", Duration::from_secs(30), || {
        let p = dir.path().join("operator.token");
        async move { std::fs::read_to_string(p).ok() }
    })
    .await;
    let token = token.trim();
    let (ok, out, err) = wait_until("vetctl over https", Duration::from_secs(30), || {
        let r = vetctl(&https, token, Some(&cert), &["host", "list", "--json"]);
        async move { r.0.then_some(r) }
    })
    .await;
    assert!(ok && out.trim() == "[]", "{out} {err}");
    // Neither the system's roots nor plain HTTP will do.
    let (ok, _, err) = vetctl(&https, token, None, &["host", "list"]);
    assert!(!ok, "trusted without VET_CA_CERT");
    assert!(err.starts_with("vetctl: "), "{err}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true),
        "plain HTTP answered on the TLS port"
    );

    // A restart keeps the certificate: agents' pins stay good.
    drop(daemon);
    std::fs::remove_file(dir.path().join("tls/cert.sha256")).unwrap();
    let _again = serve_tls(dir.path(), port);
    assert_eq!(wait_for_pin(dir.path()).await, pin);
}

/// The DER bytes of the first PEM block.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

#[tokio::test]
async fn bad_tls_settings_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vet-coordinator"))
        .args(["serve", "--tls", "--tls-cert"])
        .arg(dir.path().join("missing.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("VET_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("vet-coordinator: setting up TLS") && last.contains("missing.pem"),
        "{err}"
    );
}

/// 500 clients that send a request header one byte every 5 s: the edge
/// closes them at its header timeout and `/health` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_starve_nobody() {
    // 500 sockets on each side, in this one process.
    coordinator::api::edge::raise_open_files();
    let coord = TestCoordinator::start().await;
    let addr = coord.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let addr = addr.clone();
        slow.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let header = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
            for b in header {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                // Closed by the server: the read ends (EOF or reset).
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => panic!("a slow header was answered"),
                    Err(_) => {}
                }
            }
            started.elapsed()
        });
    }
    let health = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut answered = 0;
    let mut closed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while closed.len() < 500 {
        assert!(
            Instant::now() < deadline,
            "{} of 500 slow clients still open after 30 s",
            500 - closed.len()
        );
        let r = health.get(coord.url("/health")).send().await;
        assert!(
            matches!(&r, Ok(r) if r.status() == StatusCode::OK),
            "/health did not answer with {} slow clients open: {r:?}",
            500 - closed.len()
        );
        answered += 1;
        while let Some(done) = slow.try_join_next() {
            closed.push(done.unwrap());
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            if let Some(done) = slow.join_next().await {
                closed.push(done.unwrap());
            }
        })
        .await;
    }
    let last = closed.iter().max().unwrap();
    assert!(*last < Duration::from_secs(30), "{last:?}");
    assert!(answered > 0);
    eprintln!(
        "500 slow clients closed within {last:?}; /health answered {answered} times meanwhile"
    );
}

/// The dashboard's session cookie is `Secure` when served over HTTPS.
#[tokio::test]
async fn the_session_cookie_is_secure_over_https() {
    for tls in [false, true] {
        let coord = TestCoordinator::start_with(|c| {
            c.tls = tls.then(coordinator::config::TlsConfig::default);
        })
        .await;
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if tls {
            let pem = std::fs::read(coord.dir.path().join("tls/cert.pem")).unwrap();
            http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
        }
        let resp = http
            .build()
            .unwrap()
            .post(format!("{}/ui/login", coord.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", coord.token))
            .send()
            .await
            .unwrap();
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("vet_session="), "{cookie}");
        assert_eq!(cookie.ends_with("; Secure"), tls, "{cookie}");
    }
}
