//! Atoll's storage engine: a key-value store with one global, monotonic revision.
//!
//! It owns the semantics the API server builds `resourceVersion` on, as etcd does for
//! kube-apiserver:
//! - every committed write gets the next revision; an object's *mod revision* is the revision of
//!   its last write and is what clients see as `resourceVersion`;
//! - writes are compare-and-swap on the mod revision ([`Precondition`]);
//! - [`Store::list`] reads a consistent snapshot, now or at an earlier revision still in the
//!   window; [`Store::watch`] streams every change after a revision;
//! - the revision log is trimmed to a window (a number of events and an age); reading or watching
//!   from before it fails with [`StoreError::Compacted`], which the API server turns into
//!   `410 Gone`.
//!
//! # Guarantees
//! - A write is acknowledged only after its backend made it durable (`redb`: an fsynced commit).
//!   One writer thread batches every write that is waiting into one commit (group commit), so
//!   concurrent writers share syncs.
//! - Readers never see a write before it is durable, and watchers see events in revision order
//!   with no gaps for the keys they watch.
//!
//! # Caveats
//! - Values are opaque bytes; the store never parses them.
//! - After a restart the log is reloaded from disk, but a `Modified` event whose previous value
//!   fell out of the window before the restart has no previous value; listing at a revision
//!   before such an event reports `Compacted` (a watch from it still works).

mod backend;
mod log;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use backend::BackendError;
use backend::{Backend, Loaded};
use log::RevisionLog;

/// A position in the global history of the store.
pub type Revision = u64;

/// One stored value with the revisions that describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Revision of the write that created this key.
    pub create_revision: Revision,
}

/// What a committed change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as watchers see it.
#[derive(Clone, Debug)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventKind,
    pub key: Arc<str>,
    /// The value after the change; for `Deleted`, the last value the key had.
    pub value: Bytes,
    /// The entry before the change: `None` for `Added`, and for a `Modified` event reloaded after
    /// a restart whose previous value fell out of the window.
    pub prev: Option<Entry>,
    /// Create revision of the key.
    pub create_revision: Revision,
}

/// The condition a write requires of the key's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there (or is not).
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist.
    Exists,
    /// The key must exist with exactly this mod revision (compare-and-swap).
    ModRevision(Revision),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {key} was modified: expected revision {expected}, current {current}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    #[error("revision {requested} is compacted; the oldest available is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("storage backend failed: {0}")]
    Backend(#[from] BackendError),
    #[error("the store is shut down")]
    Closed,
}

/// Which backend makes writes durable.
#[derive(Clone, Debug)]
pub enum BackendKind {
    /// Nothing survives the process; for tests and benchmarks of the layers above.
    Memory,
    /// A redb database file; every commit is fsynced before it is acknowledged.
    Redb(std::path::PathBuf),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Keep at most this many events in the revision log.
    pub max_log_events: usize,
    /// Keep events at most this old (an event newer than this is never trimmed by age).
    pub max_log_age: Duration,
    /// At most this many writes go into one commit.
    pub max_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_log_events: 100_000,
            max_log_age: Duration::from_secs(300),
            max_batch: 1024,
        }
    }
}

/// A consistent page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<(Arc<str>, Entry)>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Whether more keys under the prefix follow the last item.
    pub more: bool,
}

struct State {
    objects: BTreeMap<Arc<str>, Entry>,
    log: RevisionLog,
    revision: Revision,
}

struct Shared {
    state: RwLock<State>,
    /// Publishes the latest committed revision.
    committed: watch::Sender<Revision>,
    /// The open watches, by what they cover: a commit wakes only those covering its keys
    /// (thousands of clients each watching one object must not all wake on every write).
    watchers: Mutex<Watchers>,
    writes: mpsc::UnboundedSender<WriteRequest>,
}

/// What a watch covers.
#[derive(Clone, Debug)]
enum Scope {
    /// Every key starting with this.
    Prefix(String),
    /// This key only.
    Key(String),
}

/// How a watch is woken.
struct Signal {
    notify: tokio::sync::Notify,
    /// The lowest revision committed for this watch since it last looked (`NONE` if none):
    /// a woken watch reads the log from there, not from wherever it last was.
    first: AtomicU64,
}

const NONE: Revision = Revision::MAX;

/// The open watches, by the prefix or exact key they cover. Prefixes ending at a `/` (all the
/// server uses) are looked up from each committed key's own prefixes, without allocating; any
/// other prefix is matched one by one.
#[derive(Default)]
struct Watchers {
    prefixes: HashMap<String, Vec<Arc<Signal>>>,
    keys: HashMap<String, Vec<Arc<Signal>>>,
    odd_prefixes: HashMap<String, Vec<Arc<Signal>>>,
}

impl Watchers {
    fn map(&mut self, scope: &Scope) -> (&mut HashMap<String, Vec<Arc<Signal>>>, String) {
        match scope {
            Scope::Key(k) => (&mut self.keys, k.clone()),
            Scope::Prefix(p) if p.is_empty() || p.ends_with('/') => (&mut self.prefixes, p.clone()),
            Scope::Prefix(p) => (&mut self.odd_prefixes, p.clone()),
        }
    }

    fn add(&mut self, scope: &Scope, signal: Arc<Signal>) {
        let (map, at) = self.map(scope);
        map.entry(at).or_default().push(signal);
    }

    fn remove(&mut self, scope: &Scope, signal: &Arc<Signal>) {
        let (map, at) = self.map(scope);
        if let Some(list) = map.get_mut(&at) {
            list.retain(|s| !Arc::ptr_eq(s, signal));
            if list.is_empty() {
                map.remove(&at);
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.prefixes.is_empty() && self.keys.is_empty() && self.odd_prefixes.is_empty()
    }

    /// Wake the watches covering `key`, committed at `revision`.
    fn wake(&self, key: &str, revision: Revision) {
        let wake = |list: Option<&Vec<Arc<Signal>>>| {
            for s in list.into_iter().flatten() {
                s.first.fetch_min(revision, Ordering::AcqRel);
                s.notify.notify_one();
            }
        };
        // Every prefix of the key that ends at a `/`, the empty one, and the key itself.
        wake(self.prefixes.get(""));
        for (i, _) in key.match_indices('/') {
            wake(self.prefixes.get(&key[..=i]));
        }
        wake(self.keys.get(key));
        for (p, list) in &self.odd_prefixes {
            if key.starts_with(p.as_str()) {
                wake(Some(list));
            }
        }
    }
}

/// A handle to the store; cheap to clone, shared by every request of the server.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// One write as the writer thread receives it.
#[derive(Debug)]
pub enum WriteOp {
    Put {
        key: String,
        value: Bytes,
        precondition: Precondition,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<Event, StoreError>>,
}

impl Store {
    /// Open (or create) a store. For `Redb`, everything committed before is loaded back.
    pub fn open(kind: BackendKind, options: Options) -> Result<Store, StoreError> {
        let (backend, loaded): (Box<dyn Backend>, Loaded) = match kind {
            BackendKind::Memory => (Box::new(backend::Memory), Loaded::default()),
            BackendKind::Redb(path) => {
                let (b, loaded) = backend::Redb::open(&path)?;
                (Box::new(b), loaded)
            }
        };
        let revision = loaded.revision;
        let mut objects = BTreeMap::new();
        for (key, entry) in loaded.objects {
            objects.insert(Arc::<str>::from(key), entry);
        }
        let log = RevisionLog::reload(loaded.compacted, loaded.events, revision);
        let (committed, _) = watch::channel(revision);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                objects,
                log,
                revision,
            }),
            committed,
            watchers: Mutex::new(Watchers::default()),
            writes: tx,
        });
        let writer = Writer {
            shared: Arc::downgrade(&shared),
            backend,
            options,
            requests: rx,
        };
        std::thread::Builder::new()
            .name("atoll-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(BackendError::Io(e.to_string())))?;
        Ok(Store { shared })
    }

    /// Open a store at `path` with the redb backend, creating it if needed.
    pub fn open_redb(path: &Path) -> Result<Store, StoreError> {
        Store::open(BackendKind::Redb(path.to_path_buf()), Options::default())
    }

    pub fn memory() -> Store {
        // The memory backend cannot fail to open.
        match Store::open(BackendKind::Memory, Options::default()) {
            Ok(s) => s,
            Err(e) => panic!("memory store failed to open: {e}"),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A poisoned lock means a writer panicked mid-update; the state is still the last
        // consistent one because the writer mutates only after a successful commit.
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Submit one write and wait until it is durable.
    pub async fn write(&self, op: WriteOp) -> Result<Event, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .writes
            .send(WriteRequest { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn create(&self, key: &str, value: Bytes) -> Result<Event, StoreError> {
        self.write(WriteOp::Put {
            key: key.to_string(),
            value,
            precondition: Precondition::Absent,
        })
        .await
    }

    pub async fn update(
        &self,
        key: &str,
        value: Bytes,
        precondition: Precondition,
    ) -> Result<Event, StoreError> {
        self.write(WriteOp::Put {
            key: key.to_string(),
            value,
            precondition,
        })
        .await
    }

    pub async fn delete(&self, key: &str, precondition: Precondition) -> Result<Event, StoreError> {
        self.write(WriteOp::Delete {
            key: key.to_string(),
            precondition,
        })
        .await
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        self.read().objects.get(key).cloned()
    }

    /// The latest committed revision.
    pub fn revision(&self) -> Revision {
        self.read().revision
    }

    /// The oldest revision a watch may start from.
    pub fn compacted_revision(&self) -> Revision {
        self.read().log.compacted()
    }

    /// List keys starting with `prefix`, after `start_after` (exclusive), at most `limit` of them
    /// (0 = no limit), as of `at` (`None` = now).
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<ListPage, StoreError> {
        let state = self.read();
        let revision = at.unwrap_or(state.revision);
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        // Undo, key by key, every change after `revision`: the state of a key at `revision` is
        // the `prev` of the first event after it.
        let mut undo: BTreeMap<Arc<str>, Option<Entry>> = BTreeMap::new();
        if revision < state.revision {
            for event in
                state
                    .log
                    .since(revision, prefix)
                    .map_err(|oldest| StoreError::Compacted {
                        requested: revision,
                        oldest,
                    })?
            {
                if undo.contains_key(&event.key) {
                    continue;
                }
                let before = match (&event.kind, &event.prev) {
                    (EventKind::Added, _) => None,
                    (_, Some(p)) => Some(p.clone()),
                    (_, None) => {
                        return Err(StoreError::Compacted {
                            requested: revision,
                            oldest: event.revision,
                        });
                    }
                };
                undo.insert(event.key.clone(), before);
            }
        }
        let lower = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k),
            _ => Bound::Included(prefix),
        };
        let current = state
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let past = undo.range::<str, _>((lower, Bound::Unbounded));
        let mut items = Vec::new();
        let mut more = false;
        for (key, entry) in merge_sorted(current, past) {
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push((key.clone(), entry.clone()));
        }
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    /// Watch every change to keys under `prefix` after revision `from`.
    pub fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        self.open_watch(Scope::Prefix(prefix.to_string()), from)
    }

    /// Watch every change to `key` alone after revision `from` (a client watching one object).
    pub fn watch_key(&self, key: &str, from: Revision) -> Result<Watch, StoreError> {
        self.open_watch(Scope::Key(key.to_string()), from)
    }

    fn open_watch(&self, scope: Scope, from: Revision) -> Result<Watch, StoreError> {
        let signal = Arc::new(Signal {
            notify: tokio::sync::Notify::new(),
            first: AtomicU64::new(NONE),
        });
        // Registered before the log is first read, so no commit after that read goes unseen.
        self.watchers().add(&scope, signal.clone());
        let watch = Watch {
            store: self.clone(),
            scope,
            cursor: from,
            signal,
        };
        let compacted = self.read().log.compacted();
        if from < compacted {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: compacted,
            });
        }
        Ok(watch)
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver that changes whenever a revision is committed.
    pub fn subscribe_revision(&self) -> watch::Receiver<Revision> {
        self.shared.committed.subscribe()
    }
}

/// Merge the current range with the undo overlay: keys in the overlay take its value (or vanish).
fn merge_sorted<'a>(
    current: impl Iterator<Item = (&'a Arc<str>, &'a Entry)>,
    past: impl Iterator<Item = (&'a Arc<str>, &'a Option<Entry>)>,
) -> impl Iterator<Item = (&'a Arc<str>, &'a Entry)> {
    let mut current = current.peekable();
    let mut past = past.peekable();
    std::iter::from_fn(move || {
        loop {
            let next = match (current.peek(), past.peek()) {
                (None, None) => return None,
                (Some(_), None) => current.next(),
                (None, Some(_)) => past.next().and_then(|(k, e)| e.as_ref().map(|e| (k, e))),
                (Some((ck, _)), Some((pk, _))) => match ck.cmp(pk) {
                    std::cmp::Ordering::Less => current.next(),
                    std::cmp::Ordering::Greater => {
                        past.next().and_then(|(k, e)| e.as_ref().map(|e| (k, e)))
                    }
                    std::cmp::Ordering::Equal => {
                        current.next();
                        past.next().and_then(|(k, e)| e.as_ref().map(|e| (k, e)))
                    }
                },
            };
            if next.is_some() {
                return next;
            }
        }
    })
}

/// A stream of events after a revision, for keys under a prefix.
///
/// It reads the shared revision log, so a slow watcher costs no memory of its own; if it falls
/// so far behind that the log was trimmed past its cursor, [`Watch::next_batch`] returns
/// `Compacted` and the client must re-list, as with etcd.
pub struct Watch {
    store: Store,
    scope: Scope,
    cursor: Revision,
    signal: Arc<Signal>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.store.watchers().remove(&self.scope, &self.signal);
    }
}

impl Watch {
    /// The revision of the last event delivered (or the start revision).
    pub fn cursor(&self) -> Revision {
        self.cursor
    }

    /// Events after the cursor, waiting until there is at least one.
    pub async fn next_batch(&mut self) -> Result<Vec<Event>, StoreError> {
        loop {
            let (events, head) = {
                let state = self.store.read();
                let (prefix, exact) = match &self.scope {
                    Scope::Prefix(p) => (p.as_str(), false),
                    Scope::Key(k) => (k.as_str(), true),
                };
                let events: Vec<Event> = state
                    .log
                    .since(self.cursor, prefix)
                    .map_err(|oldest| StoreError::Compacted {
                        requested: self.cursor,
                        oldest,
                    })?
                    .filter(|e| !exact || &*e.key == prefix)
                    .take(4096)
                    .cloned()
                    .collect();
                (events, state.revision)
            };
            if let Some(last) = events.last() {
                self.cursor = last.revision;
                return Ok(events);
            }
            // Nothing for this watch up to head: skip ahead so the next read starts there.
            self.cursor = self.cursor.max(head);
            // A commit after the read above has left a permit, so this does not miss it.
            self.signal.notify.notified().await;
            // Nothing for this watch was committed between the cursor and the first revision
            // it was woken for (it would have been woken for that): read from there.
            let first = self.signal.first.swap(NONE, Ordering::AcqRel);
            if first != NONE {
                self.cursor = self.cursor.max(first - 1);
            }
        }
    }
}

/// The single writer: batches waiting writes, makes them durable, then publishes them.
struct Writer {
    shared: std::sync::Weak<Shared>,
    backend: Box<dyn Backend>,
    options: Options,
    requests: mpsc::UnboundedReceiver<WriteRequest>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match self.requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            self.commit(&shared, batch);
        }
    }

    fn commit(&mut self, shared: &Shared, batch: Vec<WriteRequest>) {
        // Validate each write against the state plus the earlier writes of this batch.
        let (mut revision, compacted) = {
            let s = shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (s.revision, s.log.compacted())
        };
        let mut pending: HashMap<String, Option<Entry>> = HashMap::new();
        let mut accepted: Vec<(Event, oneshot::Sender<Result<Event, StoreError>>)> = Vec::new();
        {
            let s = shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for WriteRequest { op, reply } in batch {
                let key = match &op {
                    WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => key.clone(),
                };
                let current = match pending.get(&key) {
                    Some(e) => e.clone(),
                    None => s.objects.get(key.as_str()).cloned(),
                };
                match plan(op, current.as_ref(), revision + 1) {
                    Ok(event) => {
                        revision += 1;
                        pending.insert(
                            key,
                            match event.kind {
                                EventKind::Deleted => None,
                                _ => Some(Entry {
                                    value: event.value.clone(),
                                    mod_revision: event.revision,
                                    create_revision: event.create_revision,
                                }),
                            },
                        );
                        accepted.push((event, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let now = Instant::now();
        let new_compacted = {
            let s = shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            s.log.compaction_point(
                accepted.len(),
                now,
                self.options.max_log_events,
                self.options.max_log_age,
            )
        }
        .max(compacted);
        let events: Vec<&Event> = accepted.iter().map(|(e, _)| e).collect();
        if let Err(e) = self.backend.persist(&events, new_compacted) {
            tracing::error!(error = %e, "store commit failed; the batch is refused");
            let msg = e.to_string();
            for (_, reply) in accepted {
                let _ = reply.send(Err(StoreError::Backend(BackendError::Io(msg.clone()))));
            }
            return;
        }
        {
            let mut s = shared
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (event, _) in &accepted {
                match event.kind {
                    EventKind::Deleted => {
                        s.objects.remove(&event.key);
                    }
                    _ => {
                        s.objects.insert(
                            event.key.clone(),
                            Entry {
                                value: event.value.clone(),
                                mod_revision: event.revision,
                                create_revision: event.create_revision,
                            },
                        );
                    }
                }
                s.log.push(event.clone(), now);
            }
            s.revision = revision;
            s.log.compact(new_compacted);
        }
        shared.committed.send_replace(revision);
        {
            let watchers = shared
                .watchers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (event, _) in &accepted {
                watchers.wake(&event.key, event.revision);
            }
        }
        for (event, reply) in accepted {
            let _ = reply.send(Ok(event));
        }
    }
}

/// Check a write against the key's current entry and build the event it would commit.
fn plan(op: WriteOp, current: Option<&Entry>, revision: Revision) -> Result<Event, StoreError> {
    let check = |key: &str, precondition: Precondition| -> Result<(), StoreError> {
        match (precondition, current) {
            (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists(key.to_string())),
            (Precondition::Exists | Precondition::ModRevision(_), None) => {
                Err(StoreError::NotFound(key.to_string()))
            }
            (Precondition::ModRevision(expected), Some(e)) if e.mod_revision != expected => {
                Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: e.mod_revision,
                })
            }
            _ => Ok(()),
        }
    };
    match op {
        WriteOp::Put {
            key,
            value,
            precondition,
        } => {
            check(&key, precondition)?;
            Ok(Event {
                revision,
                kind: if current.is_some() {
                    EventKind::Modified
                } else {
                    EventKind::Added
                },
                key: Arc::from(key),
                value,
                prev: current.cloned(),
                create_revision: current.map_or(revision, |c| c.create_revision),
            })
        }
        WriteOp::Delete { key, precondition } => {
            check(&key, precondition)?;
            let Some(current) = current else {
                return Err(StoreError::NotFound(key));
            };
            Ok(Event {
                revision,
                kind: EventKind::Deleted,
                key: Arc::from(key),
                value: current.value.clone(),
                prev: Some(current.clone()),
                create_revision: current.create_revision,
            })
        }
    }
}

#[cfg(test)]
mod tests;
