//! The store's read connections: at most [`MAX_READERS`] open at once,
//! reused; a reader that finds them all busy waits for one to come back
//! instead of opening another, so a burst of reads (a claim flood, many
//! dashboards) cannot multiply connections and starve the writer of CPU.
//!
//! Never: hand out a connection that can write.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

/// Read connections open at most: a few per core is all SQLite in WAL
/// mode can use on the machines we run on.
pub const MAX_READERS: usize = 4;

struct Idle {
    conns: Vec<Connection>,
    /// Connections open, idle or lent.
    open: usize,
}

pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Idle>,
    returned: Condvar,
}

/// A lent read connection; goes back to the pool when dropped.
pub struct Lent<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl std::ops::Deref for Lent<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("lent until dropped")
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("lent until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.lock().conns.push(c);
            self.pool.returned.notify_one();
        }
    }
}

impl ReadPool {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Idle {
                conns: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection, configured by `configure` when it is new.
    pub fn get(
        &self,
        configure: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<Lent<'_>> {
        let mut idle = self.lock();
        loop {
            if let Some(conn) = idle.conns.pop() {
                return Ok(Lent {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if idle.open < MAX_READERS {
                idle.open += 1;
                drop(idle);
                let opened = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .and_then(|c| configure(&c).map(|()| c));
                return match opened {
                    Ok(conn) => Ok(Lent {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Connections open now (idle or lent).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_bounded_reused_and_wait_for_one_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)")
            .unwrap();
        let pool = std::sync::Arc::new(ReadPool::new(&path));
        let held: Vec<_> = (0..MAX_READERS)
            .map(|_| pool.get(|_| Ok(())).unwrap())
            .collect();
        assert_eq!(pool.open(), MAX_READERS);
        // One more reader waits until a connection comes back.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let c = pool.get(|_| Ok(())).unwrap();
                let n: i64 = c
                    .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .unwrap();
                tx.send(n).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "no fifth connection is opened"
        );
        drop(held);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(0));
        waiting.join().unwrap();
        assert_eq!(pool.open(), MAX_READERS, "the connections were reused");
        let c = pool.get(|_| Ok(())).unwrap();
        assert!(
            c.execute("INSERT INTO t VALUES (1)", []).is_err(),
            "read-only"
        );
    }
}
