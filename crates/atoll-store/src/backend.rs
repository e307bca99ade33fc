//! Durability backends. The writer thread calls [`Backend::persist`] once per batch and
//! acknowledges the batch only when it returns `Ok`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Entry, Event, EventKind, Revision};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<redb::Error> for BackendError {
    fn from(e: redb::Error) -> Self {
        BackendError::Io(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for BackendError {
            fn from(e: $t) -> Self { BackendError::Io(e.to_string()) }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// An event as it is reloaded from disk, before its `prev` is rebuilt.
pub(crate) struct StoredEvent {
    pub revision: Revision,
    pub kind: EventKind,
    pub key: String,
    pub value: Bytes,
    pub prev_mod_revision: Revision,
    pub create_revision: Revision,
}

#[derive(Default)]
pub(crate) struct Loaded {
    pub objects: Vec<(String, Entry)>,
    pub events: Vec<StoredEvent>,
    pub revision: Revision,
    pub compacted: Revision,
}

pub(crate) trait Backend: Send {
    /// Make a batch of events durable, and drop persisted events at or below `compacted`.
    fn persist(&mut self, events: &[&Event], compacted: Revision) -> Result<(), BackendError>;
}

pub(crate) struct Memory;

impl Backend for Memory {
    fn persist(&mut self, _: &[&Event], _: Revision) -> Result<(), BackendError> {
        Ok(())
    }
}

const REDB_CACHE_BYTES: usize = 16 * 1024 * 1024;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) struct Redb {
    db: redb::Database,
    compacted: Revision,
}

impl Redb {
    pub fn open(path: &Path) -> Result<(Redb, Loaded), BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::Io(e.to_string()))?;
        }
        // The store keeps every object in memory and reads the file only at start, so redb's
        // page cache would hold a second copy for nothing: keep it small.
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(OBJECTS)?;
            txn.open_table(EVENTS)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        let mut loaded = Loaded::default();
        let read = db.begin_read()?;
        let meta = read.open_table(META)?;
        loaded.revision = meta.get("revision")?.map_or(0, |v| v.value());
        loaded.compacted = meta.get("compacted")?.map_or(0, |v| v.value());
        for row in read.open_table(OBJECTS)?.iter()? {
            let (k, v) = row?;
            loaded
                .objects
                .push((k.value().to_string(), decode_entry(v.value())?));
        }
        for row in read.open_table(EVENTS)?.iter()? {
            let (k, v) = row?;
            loaded.events.push(decode_event(k.value(), v.value())?);
        }
        let compacted = loaded.compacted;
        Ok((Redb { db, compacted }, loaded))
    }
}

impl Backend for Redb {
    fn persist(&mut self, events: &[&Event], compacted: Revision) -> Result<(), BackendError> {
        let txn = self.db.begin_write()?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut log = txn.open_table(EVENTS)?;
            let mut meta = txn.open_table(META)?;
            let mut buf = Vec::new();
            for e in events {
                match e.kind {
                    EventKind::Deleted => {
                        objects.remove(&*e.key)?;
                    }
                    _ => {
                        encode_entry(&mut buf, e.revision, e.create_revision, &e.value);
                        objects.insert(&*e.key, buf.as_slice())?;
                    }
                }
                encode_event(&mut buf, e);
                log.insert(e.revision, buf.as_slice())?;
            }
            if let Some(last) = events.last() {
                meta.insert("revision", last.revision)?;
            }
            if compacted > self.compacted {
                log.retain_in(..=compacted, |_, _| false)?;
                meta.insert("compacted", compacted)?;
            }
        }
        txn.commit()?;
        self.compacted = self.compacted.max(compacted);
        Ok(())
    }
}

fn encode_entry(
    buf: &mut Vec<u8>,
    mod_revision: Revision,
    create_revision: Revision,
    value: &[u8],
) {
    buf.clear();
    buf.extend_from_slice(&mod_revision.to_le_bytes());
    buf.extend_from_slice(&create_revision.to_le_bytes());
    buf.extend_from_slice(value);
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, BackendError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            BackendError::Corrupt(format!("record of {} bytes is too short", bytes.len()))
        })
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, BackendError> {
    Ok(Entry {
        mod_revision: read_u64(bytes, 0)?,
        create_revision: read_u64(bytes, 8)?,
        value: Bytes::copy_from_slice(&bytes[16..]),
    })
}

/// Event record: kind (1 byte), prev mod revision, create revision, key length (u64), key, value.
fn encode_event(buf: &mut Vec<u8>, e: &Event) {
    buf.clear();
    buf.push(match e.kind {
        EventKind::Added => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    });
    let prev = e.prev.as_ref().map_or(0, |p| p.mod_revision);
    buf.extend_from_slice(&prev.to_le_bytes());
    buf.extend_from_slice(&e.create_revision.to_le_bytes());
    buf.extend_from_slice(&(e.key.len() as u64).to_le_bytes());
    buf.extend_from_slice(e.key.as_bytes());
    buf.extend_from_slice(&e.value);
}

fn decode_event(revision: Revision, bytes: &[u8]) -> Result<StoredEvent, BackendError> {
    let kind = match bytes.first() {
        Some(0) => EventKind::Added,
        Some(1) => EventKind::Modified,
        Some(2) => EventKind::Deleted,
        other => return Err(BackendError::Corrupt(format!("event kind {other:?}"))),
    };
    let prev_mod_revision = read_u64(bytes, 1)?;
    let create_revision = read_u64(bytes, 9)?;
    let key_len = usize::try_from(read_u64(bytes, 17)?)
        .map_err(|_| BackendError::Corrupt("key length".into()))?;
    let key = bytes
        .get(25..25 + key_len)
        .ok_or_else(|| BackendError::Corrupt("key length past record".into()))?;
    let key = std::str::from_utf8(key)
        .map_err(|_| BackendError::Corrupt("key is not UTF-8".into()))?
        .to_string();
    Ok(StoredEvent {
        revision,
        kind,
        key,
        value: Bytes::copy_from_slice(&bytes[25 + key_len..]),
        prev_mod_revision,
        create_revision,
    })
}

/// Rebuild the `prev` of reloaded events from the events before them in the window.
pub(crate) fn rebuild_prev(events: Vec<StoredEvent>) -> Vec<Event> {
    let mut last: std::collections::HashMap<String, Entry> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let prev = match e.kind {
            EventKind::Added => None,
            EventKind::Modified => last.get(&e.key).cloned(),
            // A delete record carries the last value itself.
            EventKind::Deleted => Some(Entry {
                value: e.value.clone(),
                mod_revision: e.prev_mod_revision,
                create_revision: e.create_revision,
            }),
        };
        match e.kind {
            EventKind::Deleted => {
                last.remove(&e.key);
            }
            _ => {
                last.insert(
                    e.key.clone(),
                    Entry {
                        value: e.value.clone(),
                        mod_revision: e.revision,
                        create_revision: e.create_revision,
                    },
                );
            }
        }
        out.push(Event {
            revision: e.revision,
            kind: e.kind,
            key: Arc::from(e.key),
            value: e.value,
            prev,
            create_revision: e.create_revision,
        });
    }
    out
}
