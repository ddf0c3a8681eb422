//! Kernel log records (`/dev/kmsg`) and the hardware failures they report.
//!
//! A record is `PRIO,SEQ,USEC,FLAGS[,…];MESSAGE` (Documentation/ABI/testing/
//! dev-kmsg); continuation lines start with a space and are ignored. Only the
//! kernel's own facility (0) counts: user space can write to /dev/kmsg but
//! never as facility 0, so nothing outside the kernel can fake a failure.
//!
//! Classes (the `kmsg` measurement key is `<class>/<device>`): `medium_error`,
//! `io_error` (other block-layer errors), `mce` (`cpuN_uc` / `cpuN_ce` by the
//! status register's UC bit; bank 128 is the kernel's thermal pseudo-bank
//! and counts as `throttle`), `edac`
//! (`mcN_ce` / `mcN_ue`, by the count the line gives), `aer`, `throttle`.

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub facility: u32,
    pub level: u32,
    pub seq: u64,
    pub usec: u64,
    pub message: String,
}

/// Parses one record; `None` for continuation lines and anything else.
pub fn parse_record(line: &str) -> Option<Record> {
    let (head, message) = line.split_once(';')?;
    let mut f = head.split(',');
    let prio: u32 = f.next()?.parse().ok()?;
    let seq = f.next()?.parse().ok()?;
    let usec = f.next()?.parse().ok()?;
    Some(Record {
        facility: prio >> 3,
        level: prio & 7,
        seq,
        usec,
        message: message.trim_end_matches('\n').to_string(),
    })
}

/// A hardware failure seen in the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// `medium_error`, `io_error`, `mce`, `edac`, `aer` or `throttle`.
    pub class: &'static str,
    pub device: String,
    /// How many errors the line reports (EDAC lines give a count).
    pub count: u64,
}

impl KernelError {
    /// The `kmsg` measurement key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.class, self.device)
    }

    /// Whether the profile's defaults fail a stage on it.
    pub fn is_critical(&self) -> bool {
        self.class == "medium_error"
            || (self.class == "mce" && self.device.ends_with("_uc"))
            || (self.class == "edac" && self.device.ends_with("_ue"))
    }
}

fn err(class: &'static str, device: impl Into<String>, count: u64) -> Option<KernelError> {
    Some(KernelError {
        class,
        device: device.into(),
        count,
    })
}

/// The word after `marker` in `s`, up to a comma or space.
fn word_after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &s[s.find(marker)? + marker.len()..];
    let end = rest.find([',', ' ', ']', ':']).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Classifies a kernel message; `None` when it reports no hardware failure.
pub fn classify(message: &str) -> Option<KernelError> {
    let m = message.trim();
    // Block layer (blk_print_req_error): "<what> error, dev <dev>, sector <n> …".
    if let Some(i) = m.find(" error, dev ") {
        let what = &m[..i];
        let dev = word_after(m, " error, dev ")?;
        let class = if what.ends_with("medium") {
            "medium_error"
        } else {
            "io_error"
        };
        return err(class, dev, 1);
    }
    // SCSI sense data: "sd 2:0:0:0: [sdb] tag#0 Sense Key : Medium Error [current]".
    if m.contains("Sense Key : Medium Error") {
        let dev = m
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map_or("unknown", |(d, _)| d);
        return err("medium_error", dev, 1);
    }
    // "Buffer I/O error on dev sdb1, logical block 0, …".
    if let Some(dev) = word_after(m, "Buffer I/O error on dev ") {
        return err("io_error", dev, 1);
    }
    // Thermal throttling, with or without the "mce: " prefix.
    if m.contains("temperature above threshold, cpu clock throttled") {
        let cpu = m
            .trim_start_matches("mce: ")
            .split(':')
            .next()?
            .to_ascii_lowercase();
        return err("throttle", cpu, 1);
    }
    // "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 128: …".
    if let Some(rest) = m.split_once("[Hardware Error]: CPU ").map(|(_, r)| r) {
        if rest.contains("Machine Check") {
            let cpu = rest.split(':').next()?.trim();
            let bank = word_after(rest, "Bank ");
            if bank == Some("128") {
                return err("throttle", format!("cpu{cpu}"), 1);
            }
            // MCi_STATUS bit 61 (UC): the error was not corrected.
            let status = rest
                .rsplit(": ")
                .next()
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
            let kind = match status {
                Some(s) if s & (1 << 61) == 0 => "ce",
                _ => "uc",
            };
            return err("mce", format!("cpu{cpu}_{kind}"), 1);
        }
    }
    // "EDAC MC0: 4 CE error on …", "EDAC MC1: 1 UE memory read error on …".
    if let Some(rest) = m.strip_prefix("EDAC MC") {
        let (mc, rest) = rest.split_once(": ")?;
        let mut w = rest.split_whitespace();
        let count: u64 = w.next()?.parse().ok()?;
        let kind = match w.next()? {
            "CE" => "ce",
            "UE" => "ue",
            _ => return None,
        };
        if !mc.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        return err("edac", format!("mc{mc}_{kind}"), count);
    }
    // "pcieport 0000:00:1c.1: AER: Corrected error received: 0000:00:1c.1".
    if m.contains("AER: ") && m.contains("error received") {
        let reporter = m.split(": ").next()?.split_whitespace().last()?;
        let source = m
            .rsplit_once("error received: ")
            .map(|(_, s)| s.trim())
            .filter(|s| !s.starts_with("id="))
            .unwrap_or(reporter);
        return err("aer", source, 1);
    }
    None
}

/// Classifies a raw `/dev/kmsg` record, kernel facility only.
pub fn classify_record(line: &str) -> Option<(Record, KernelError)> {
    let r = parse_record(line)?;
    if r.facility != 0 {
        return None;
    }
    let e = classify(&r.message)?;
    Some((r, e))
}
