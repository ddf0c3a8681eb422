//! Wake-on-LAN: the magic packet (6 × 0xFF, then the MAC 16 times) sent by
//! UDP to the host's configured address.
//!
//! Never: pick a default broadcast address. No address configured means no
//! packet.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use common::mac::Mac;

pub fn magic_packet(mac: Mac) -> [u8; 102] {
    let mut p = [0xFFu8; 102];
    for i in 0..16 {
        p[6 + i * 6..12 + i * 6].copy_from_slice(&mac.0);
    }
    p
}

/// Parses `IP` or `IP:PORT` (`[v6]:PORT` for IPv6); the port defaults to 9.
pub fn parse_target(s: &str) -> Result<(IpAddr, u16), String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, 9));
    }
    s.parse::<SocketAddr>()
        .map(|a| (a.ip(), a.port()))
        .map_err(|_| format!("not an IP or IP:PORT: {s:?}"))
}

/// Sends one magic packet to `target`.
pub fn send(mac: Mac, target: SocketAddr) -> std::io::Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()
    } else {
        "[::]:0".parse()
    }
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let sock = UdpSocket::bind(bind)?;
    sock.set_broadcast(true)?;
    sock.send_to(&magic_packet(mac), target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_layout() {
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        let p = magic_packet(mac);
        assert!(p[..6].iter().all(|b| *b == 0xFF));
        for chunk in p[6..].chunks(6) {
            assert_eq!(chunk, &mac.0);
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1").unwrap(),
            ("127.0.0.1".parse().unwrap(), 9)
        );
        assert_eq!(
            parse_target("127.0.0.1:4009").unwrap(),
            ("127.0.0.1".parse().unwrap(), 4009)
        );
        assert_eq!(
            parse_target("[::1]:7").unwrap(),
            ("::1".parse().unwrap(), 7)
        );
        assert!(parse_target("lan").is_err());
        assert!(parse_target("127.0.0.1:99999").is_err());
    }

    #[test]
    fn sends_to_a_loopback_socket() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mac: Mac = "52:54:00:aa:bb:cc".parse().unwrap();
        send(mac, rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 200];
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &magic_packet(mac)[..]);
    }
}
