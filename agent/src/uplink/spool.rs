//! Agent-side spool: unsent measurement batches survive a coordinator outage
//! and an agent restart.
//!
//! A batch is written here (and fsynced) before its first send and counts as
//! gone only once the coordinator acknowledged its `seq`. Replay is in `seq`
//! order. The coordinator dedups, so replaying an acknowledged batch is
//! harmless; losing one is not.
//!
//! On-disk format, append only:
//!
//! ```text
//! record := kind:u8 ('B' batch | 'A' ack) len:u32le crc32:u32le payload[len]
//! 'B' payload: the batch as JSON      'A' payload: seq as u64le
//! ```
//!
//! A torn record at the tail (a crash mid-write) fails its length or CRC and
//! is cut off at open. When nothing is unacknowledged the file is truncated.
//!
//! Never: reorder batches or drop one silently; renumber them only when the
//! coordinator lost batches it had acknowledged (then all at once, the new
//! file in place by rename before it counts).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::wire::MeasurementBatch;

const HEADER: usize = 9;

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Unacknowledged batches by seq.
    unacked: BTreeMap<u64, MeasurementBatch>,
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + payload.len());
    r.push(kind);
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    r.extend_from_slice(payload);
    r
}

impl Spool {
    /// Opens (creating) the spool and returns it with the batches still
    /// unacknowledged, in seq order.
    pub fn open(path: &Path) -> io::Result<(Spool, Vec<MeasurementBatch>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut unacked = BTreeMap::new();
        let mut at = 0usize;
        while bytes.len() - at >= HEADER {
            let kind = bytes[at];
            let len =
                u32::from_le_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
                    as usize;
            let crc =
                u32::from_le_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
            let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            match kind {
                b'B' => match serde_json::from_slice::<MeasurementBatch>(payload) {
                    Ok(b) => {
                        unacked.insert(b.seq, b);
                    }
                    Err(_) => break,
                },
                b'A' if len == 8 => {
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(payload);
                    unacked.remove(&u64::from_le_bytes(seq));
                }
                _ => break,
            }
            at += HEADER + len;
        }
        if at < bytes.len() {
            // Cut the torn tail so new records follow a valid one.
            file.set_len(at as u64)?;
            file.seek(SeekFrom::End(0))?;
            file.sync_data()?;
        }
        let pending = unacked.values().cloned().collect();
        Ok((
            Spool {
                path: path.to_path_buf(),
                file,
                unacked,
            },
            pending,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a batch and syncs it to disk before it is ever sent.
    pub fn append(&mut self, batch: &MeasurementBatch) -> io::Result<()> {
        let payload = serde_json::to_vec(batch).map_err(io::Error::other)?;
        self.file.write_all(&record(b'B', &payload))?;
        self.file.sync_data()?;
        self.unacked.insert(batch.seq, batch.clone());
        Ok(())
    }

    /// Records an acknowledgement. A lost ack record only causes a harmless
    /// resend, so it is not synced; the file is emptied when nothing is left.
    pub fn ack(&mut self, seq: u64) -> io::Result<()> {
        self.unacked.remove(&seq);
        if self.unacked.is_empty() {
            self.file.set_len(0)?;
            self.file.sync_data()?;
        } else {
            self.file.write_all(&record(b'A', &seq.to_le_bytes()))?;
        }
        Ok(())
    }

    /// Numbers every unacknowledged batch `down` lower (the coordinator
    /// lost that many acknowledged batches). The rewritten spool replaces the
    /// old one by rename, synced, so a crash leaves one or the other.
    pub fn renumber(&mut self, down: u64) -> io::Result<()> {
        let batches: Vec<MeasurementBatch> = self
            .unacked
            .values()
            .map(|b| MeasurementBatch {
                seq: b.seq.saturating_sub(down),
                samples: b.samples.clone(),
            })
            .collect();
        let tmp = self.path.with_extension("renumbered");
        {
            let mut f = File::create(&tmp)?;
            for b in &batches {
                let payload = serde_json::to_vec(b).map_err(io::Error::other)?;
                f.write_all(&record(b'B', &payload))?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.unacked = batches.into_iter().map(|b| (b.seq, b)).collect();
        Ok(())
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::measurement::{Finite, Kind, Sample};
    use common::time::Timestamp;

    fn batch(seq: u64, n: usize) -> MeasurementBatch {
        let samples = (0..n)
            .map(|i| Sample {
                ts: Timestamp::from_unix_millis(1_795_000_000_000 + i as i64),
                kind: Kind::Temp,
                key: format!("t/{i}"),
                value: Finite::new(i as f64).unwrap(),
                unit: "C".into(),
                stage: Some(4),
            })
            .collect();
        MeasurementBatch { seq, samples }
    }

    #[test]
    fn replays_unacked_in_order_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, pending) = Spool::open(&path).unwrap();
        assert!(pending.is_empty());
        for seq in 1..=4 {
            s.append(&batch(seq, 3)).unwrap();
        }
        s.ack(2).unwrap();
        drop(s);
        let (mut s, pending) = Spool::open(&path).unwrap();
        assert_eq!(pending.iter().map(|b| b.seq).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(pending[0], batch(1, 3));
        for seq in [1, 3, 4] {
            s.ack(seq).unwrap();
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "emptied once all are acknowledged"
        );
    }

    #[test]
    fn renumbering_survives_a_reopen_and_later_appends_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path).unwrap();
        for seq in 7..=9 {
            s.append(&batch(seq, 2)).unwrap();
        }
        s.ack(7).unwrap();
        s.renumber(4).unwrap();
        s.append(&batch(6, 1)).unwrap();
        s.ack(4).unwrap();
        drop(s);
        let (_, pending) = Spool::open(&path).unwrap();
        assert_eq!(pending.iter().map(|b| b.seq).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(pending[0].samples, batch(9, 2).samples);
        assert_eq!(pending[1].samples.len(), 1);
        assert!(!path.with_extension("renumbered").exists());
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_precedes_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path).unwrap();
        s.append(&batch(1, 2)).unwrap();
        s.append(&batch(2, 2)).unwrap();
        drop(s);
        let full = std::fs::read(&path).unwrap();
        for cut in [full.len() - 1, full.len() - 20, full.len() / 2 + 3] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (mut s, pending) = Spool::open(&path).unwrap();
            assert_eq!(
                pending.iter().map(|b| b.seq).collect::<Vec<_>>(),
                [1],
                "cut at {cut}"
            );
            s.append(&batch(3, 1)).unwrap();
            drop(s);
            let (_, pending) = Spool::open(&path).unwrap();
            assert_eq!(
                pending.iter().map(|b| b.seq).collect::<Vec<_>>(),
                [1, 3],
                "appends after a cut tail are readable"
            );
        }
        // A flipped byte in a payload fails its CRC: that record and what follows are dropped.
        std::fs::write(&path, &full).unwrap();
        let mut bad = full.clone();
        bad[HEADER + 5] ^= 0xFF;
        std::fs::write(&path, &bad).unwrap();
        let (_, pending) = Spool::open(&path).unwrap();
        assert!(pending.is_empty());
    }
}
