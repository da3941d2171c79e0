//! The audit trail: one JSON line per query, appended durably, files rotated.
//!
//! Every statement a session runs — embedded, from the command line or over Flight SQL — ends in
//! exactly one record: who, when, what, which products and columns were read, which policies
//! applied, how many rows and bytes went back, how long it took and how it ended (`ok`,
//! `denied`, `error`, `cancelled`). Statements that fail before running (refused, invalid) are
//! recorded when they fail; statements that run are recorded when their result ends.
//!
//! Durability: each record is one `write` to a file opened for appending, followed by
//! `fdatasync`, before the caller goes on — a crash loses at most the record being written, and
//! a torn last line is skipped when reading. Several processes may append to the same directory
//! (appends of one line are atomic on local file systems). A file larger than
//! `audit.maxFileBytes` is closed and a new one started; beyond `audit.maxFiles` closed files the
//! oldest is deleted. If a record cannot be written the query fails: nothing runs unrecorded.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use meshql_contract::AuditSettings;
use serde::{Deserialize, Serialize};

/// One query, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub query_id: String,
    /// When the statement arrived (ms since the epoch).
    pub started_ms: i64,
    pub principal: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `embedded`, `cli`, `flight`, `check`, …
    pub client: String,
    pub statement: String,
    /// `domain.product` of every mesh product the statement named.
    #[serde(default)]
    pub products: Vec<String>,
    /// `domain.product.column` of every column scanned.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Names of the policy rules that shaped the result (filters, masks).
    #[serde(default)]
    pub policies: Vec<String>,
    /// `ok`, `denied`, `error`, `cancelled`; `started` for a query whose first rows were
    /// delivered and whose end was never recorded (the process stopped, or the trail could not
    /// be written when it ended).
    pub outcome: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub bytes: u64,
    pub duration_ms: f64,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The audit trail of a mesh.
#[derive(Debug)]
pub struct AuditLog {
    journal: Journal,
    /// Queries whose record was written before their work ended (answered at their deadline
    /// while a computation went on): the record their work writes when it ends is not written.
    settled: Mutex<Settled>,
}

/// Which queries' final records are written: the early ones, until their work ends, and the
/// most recent ones written by their work (so that an early record racing with the work's own
/// does not make two).
#[derive(Debug, Default)]
struct Settled {
    early: std::collections::HashSet<String>,
    recent: std::collections::VecDeque<String>,
}

/// How many recently recorded queries [`Settled`] remembers.
const RECENT: usize = 4096;

/// The most statement text one record keeps: a statement is the caller's to choose, and its
/// size must not decide how many records fit in the trail (ten 900 KB statements rotated another
/// principal's record out of a 3 × 1 MiB trail). Longer text is cut, with its length and SHA-256.
pub const MAX_RECORDED_STATEMENT: usize = 8 * 1024;
/// The most error text one record keeps.
pub const MAX_RECORDED_ERROR: usize = 4 * 1024;

/// `text` cut to at most `max` bytes (on a character boundary), followed by its full length and
/// SHA-256 when cut, so a longer original can still be matched.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    use sha2::Digest;
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} … [cut: {} bytes, sha256 {}]",
        &text[..end],
        text.len(),
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

impl AuditLog {
    /// Opens (creating) the trail in `dir`, continuing its newest file.
    pub fn open(dir: &Path, settings: &AuditSettings) -> io::Result<AuditLog> {
        Ok(AuditLog {
            journal: Journal::open(dir, "audit-", settings.max_file_bytes, settings.max_files)?,
            settled: Mutex::new(Settled::default()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.journal.dir
    }

    /// Appends `record` and waits until it is on disk.
    pub fn append(&self, record: &AuditRecord) -> io::Result<()> {
        self.journal.append(record)
    }

    /// Appends the final `record` of a query whose work has not ended (its client was answered
    /// at the deadline): the record is durable now, whatever becomes of the work, and the one
    /// the work would write when it ends is not written. Nothing is written if the work has just
    /// written its own.
    pub fn settle_early(&self, record: &AuditRecord) -> io::Result<()> {
        {
            let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
            if settled.early.contains(&record.query_id) || settled.recent.contains(&record.query_id) {
                return Ok(());
            }
            settled.early.insert(record.query_id.clone());
        }
        self.journal.append(record)
    }

    /// Whether the query's record was written early ([`AuditLog::settle_early`]) — then it
    /// forgets it — else notes that the caller writes it now.
    pub(crate) fn take_settled(&self, query_id: &str) -> bool {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        let early = settled.early.remove(query_id);
        if settled.recent.len() >= RECENT {
            settled.recent.pop_front();
        }
        settled.recent.push_back(query_id.to_string());
        early
    }

    /// Every readable record, oldest first; a query's `started` record is replaced by its
    /// final one when there is one. Torn or foreign lines are skipped.
    pub fn read_all(&self) -> io::Result<Vec<AuditRecord>> {
        let mut out: Vec<AuditRecord> = self.journal.read_all()?;
        out.sort_by_key(|r| r.started_ms);
        Ok(settle_started(out))
    }
}

/// `records` (in order) without the `started` records that a later record of the same query
/// ends (one each: the endpoints of one query share its id).
fn settle_started(records: Vec<AuditRecord>) -> Vec<AuditRecord> {
    let mut open: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    let mut superseded = vec![false; records.len()];
    for (i, r) in records.iter().enumerate() {
        let starts = open.entry(r.query_id.as_str()).or_default();
        if r.outcome == STARTED {
            starts.push(i);
        } else if !starts.is_empty() {
            superseded[starts.remove(0)] = true;
        }
    }
    records
        .into_iter()
        .zip(superseded)
        .filter_map(|(r, gone)| (!gone).then_some(r))
        .collect()
}

/// The outcome of a query whose rows began to leave before its end was recorded.
pub const STARTED: &str = "started";

/// An append-only, rotated directory of JSON-lines files (`<prefix><time>-<pid>-<seq>.jsonl`),
/// durable per record. Shared by the audit trail and the quality results.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    prefix: &'static str,
    max_file_bytes: u64,
    max_files: usize,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    path: PathBuf,
    file: File,
    /// The last append failed (e.g. a full disk): its line may be torn, so the next append
    /// starts a new file.
    failed: bool,
}

const SUFFIX: &str = ".jsonl";

impl Journal {
    /// Opens (creating) the journal in `dir`, continuing its newest file.
    pub fn open(dir: &Path, prefix: &'static str, max_file_bytes: u64, max_files: usize) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = match files(dir, prefix)?.pop() {
            Some(p) => p,
            None => new_file_path(dir, prefix),
        };
        let file = open_append(&path)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            prefix,
            max_file_bytes: max_file_bytes.max(1024),
            max_files: max_files.max(1),
            current: Mutex::new(Current {
                path,
                file,
                failed: false,
            }),
        })
    }

    /// Appends `record` as one line and waits until it is on disk.
    pub fn append<T: Serialize>(&self, record: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut current = self
            .current
            .lock()
            .map_err(|_| io::Error::other("audit writer poisoned"))?;
        if current.failed {
            let path = new_file_path(&self.dir, self.prefix);
            current.file = open_append(&path)?;
            current.path = path;
            current.failed = false;
        }
        // Another process may have rotated: follow it, so one directory keeps one order.
        let size = current.file.metadata()?.len();
        if size >= self.max_file_bytes {
            self.rotate(&mut current)?;
        }
        let written = current.file.write_all(&line).and_then(|()| current.file.sync_data());
        current.failed = written.is_err();
        written
    }

    fn rotate(&self, current: &mut Current) -> io::Result<()> {
        let newest = files(&self.dir, self.prefix)?.pop();
        let path = match newest {
            Some(p) if p != current.path && std::fs::metadata(&p)?.len() < self.max_file_bytes => p,
            _ => new_file_path(&self.dir, self.prefix),
        };
        current.file = open_append(&path)?;
        current.path = path;
        let all = files(&self.dir, self.prefix)?;
        if all.len() > self.max_files + 1 {
            for old in &all[..all.len() - self.max_files - 1] {
                if *old != current.path {
                    // Retention is the operator's policy (`maxFiles` × `maxFileBytes`), said
                    // out loud each time it drops records.
                    tracing::warn!(
                        file = %old.display(),
                        max_files = self.max_files,
                        max_file_bytes = self.max_file_bytes,
                        "journal retention: dropping the oldest file and its records"
                    );
                    if let Err(e) = std::fs::remove_file(old) {
                        tracing::warn!(file = %old.display(), error = %e, "cannot delete an old audit file");
                    }
                }
            }
        }
        tracing::info!(file = %current.path.display(), "journal: new file");
        Ok(())
    }

    /// Every readable record, in file order. Torn or foreign lines are skipped.
    pub fn read_all<T: serde::de::DeserializeOwned>(&self) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        for path in files(&self.dir, self.prefix)? {
            let file = match File::open(&path) {
                Ok(f) => f,
                // Rotated away meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in io::BufReader::new(file).split(b'\n') {
                let line = line?;
                if let Ok(r) = serde_json::from_slice::<T>(&line) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// Opens for appending; a torn last line (a crash mid-write) is ended so the next record starts
/// on its own line.
fn open_append(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new().create(true).append(true).read(true).open(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// The trail's files, oldest first (names sort by creation time).
fn files(dir: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(SUFFIX))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn new_file_path(dir: &Path, prefix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{prefix}{:020}-{:010}-{seq:06}{SUFFIX}",
        crate::time::now_ms(),
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            query_id: format!("q{i}"),
            started_ms: i as i64,
            principal: "alice".into(),
            client: "test".into(),
            statement: format!("SELECT {i}"),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    #[test]
    fn appends_rotates_and_survives_torn_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = AuditSettings {
            enabled: true,
            max_file_bytes: 1024,
            max_files: 3,
        };
        let log = AuditLog::open(dir.path(), &settings).expect("open");
        for i in 0..10 {
            log.append(&record(i)).expect("append");
        }
        // A crash mid-write leaves half a line.
        let newest = files(dir.path(), "audit-").expect("files").pop().expect("a file");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&newest)
            .and_then(|mut f| f.write_all(b"{\"query_id\":\"torn"))
            .expect("tear");
        drop(log);
        let log = AuditLog::open(dir.path(), &settings).expect("reopen");
        for i in 10..40 {
            log.append(&record(i)).expect("append");
        }
        let all = log.read_all().expect("read");
        let files = files(dir.path(), "audit-").expect("files");
        assert!(
            files.len() <= 4,
            "rotation keeps at most maxFiles closed files + the current one: {files:?}"
        );
        assert!(files.len() >= 2, "records over 1 KiB rotate: {files:?}");
        // The newest records are all there, in order, and the torn one is skipped.
        let ids: Vec<String> = all.iter().map(|r| r.query_id.clone()).collect();
        assert!(
            ids.ends_with(&(30..40).map(|i| format!("q{i}")).collect::<Vec<_>>()),
            "{ids:?}"
        );
        assert!(!ids.iter().any(|i| i.contains("torn")));
    }
}
