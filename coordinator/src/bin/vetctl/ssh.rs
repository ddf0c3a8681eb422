//! `vetctl run ssh`: turns a held run's key into a working ssh command.
//! The key is saved with mode 0600 (never readable by others, even briefly)
//! next to a known-hosts file of the run's own, so a re-imaged host never
//! clashes with the operator's ~/.ssh/known_hosts.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use common::wire::HoldKey;

use crate::secret::{write_private, Existing};

fn default_key_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set; pass --key-dir")?;
    Ok(base.join("vetting/keys"))
}

fn reachable(host: &str, port: u16) -> bool {
    (host, port)
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok())
}

pub fn run(
    run: i64,
    key: HoldKey,
    exec: bool,
    host: Option<String>,
    port: Option<u16>,
    key_dir: Option<PathBuf>,
    remote: Vec<String>,
) -> anyhow::Result<()> {
    let host = host
        .or(key.hold_ip.clone())
        .with_context(|| format!("run {run} is held but its agent has not reported an address yet; retry, or pass --host"))?;
    let port = port.or(key.ssh_port).unwrap_or(22);
    let dir = match key_dir {
        Some(d) => d,
        None => default_key_dir()?,
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let key_path = dir.join(format!("run-{run}.key"));
    let known = dir.join(format!("run-{run}.known_hosts"));
    write_private(&key_path, &key.private_key, Existing::Replace)?;
    let args: Vec<String> = [
        "-i".to_string(),
        key_path.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known.display()),
        format!("{}@{host}", key.user),
    ]
    .into_iter()
    .chain(remote)
    .collect();
    if exec {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new("ssh").args(&args).exec();
        bail!("running ssh: {err}");
    }
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=@:".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    println!("ssh {}", quoted.join(" "));
    if !reachable(&host, port) {
        bail!("{host}:{port} is not reachable yet; the command above works once it is");
    }
    Ok(())
}
