//! Watch: a stream of `{"type": ..., "object": ...}` lines from a resource version.
//!
//! # Guarantees
//! - Events arrive in revision order, each once, for the objects the selectors match; an object
//!   that stops matching a selector is sent as `DELETED`, one that starts matching as `ADDED`
//!   (as kube-apiserver's watch cache does).
//! - Without a `resourceVersion` (or with `"0"`), the stream starts with an `ADDED` event for
//!   every current object, then continues from that snapshot; with `sendInitialEvents=true` a
//!   `BOOKMARK` annotated `k8s.io/initial-events-end` marks the end of those.
//! - From a version older than the revision window, the stream is one `ERROR` event with a
//!   `410 Expired` Status, and clients re-list.
//! - With `allowWatchBookmarks=true`, quiet streams get a `BOOKMARK` carrying the latest
//!   revision, so a client can resume without a 410 after a long quiet period.
//! - The stream ends after `timeoutSeconds` (default 30 to 60 minutes, spread as kube-apiserver
//!   spreads them) or when the client goes away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_store::{Event, EventKind, StoreError};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::object::{self, decode_stored};
use crate::registry::ResourceType;
use crate::rest::Ctx;
use crate::selector::{FieldSelector, LabelSelector};

struct WatchParams {
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    timeout: Duration,
    table: bool,
    include_object: String,
}

pub fn serve(ctx: Ctx) -> ApiResult<Response> {
    let (labels, mut fields) = ctx.selectors()?;
    if let Some(name) = &ctx.rr.name {
        fields.0.push(crate::selector::FieldRequirement {
            field: "metadata.name".into(),
            value: name.clone(),
            equal: true,
        });
    }
    let timeout = match ctx.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(u64::try_from(t).unwrap_or(u64::MAX)),
        Some(_) => Duration::from_secs(1800),
        None => Duration::from_secs(1800 + u64::from(uuid::Uuid::new_v4().as_u128() as u16 % 1800)),
    };
    let params = WatchParams {
        labels,
        fields,
        bookmarks: ctx.query.flag("allowWatchBookmarks"),
        timeout,
        table: ctx.wants_table(),
        include_object: ctx
            .query
            .get("includeObject")
            .unwrap_or("Metadata")
            .to_string(),
    };
    let send_initial = ctx.query.flag("sendInitialEvents");
    let rv = ctx.query.get("resourceVersion").map(String::from);
    let start = match rv.as_deref() {
        None | Some("0") => None,
        Some(v) => Some(object::parse_rv(v)?),
    };
    if send_initial && start.is_some() {
        // Streaming lists start from "now" or "any"; an exact version makes no sense with them.
        let ok = ctx.query.get("resourceVersionMatch") == Some("NotOlderThan");
        if !ok {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                vec![crate::error::Cause::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )],
            ));
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    // One object, named (and in a namespace, if namespaced): the store wakes this watch for
    // that object's key alone, and the initial list reads only keys starting with it.
    let one = |field: &str| {
        params
            .fields
            .0
            .iter()
            .find(|r| r.equal && r.field == field)
            .map(|r| r.value.clone())
    };
    let single_key = one("metadata.name").and_then(|name| {
        if !ctx.rt.namespaced {
            return Some(ctx.rt.key(None, &name));
        }
        let ns = ctx
            .rr
            .namespace
            .clone()
            .or_else(|| one("metadata.namespace"))?;
        Some(ctx.rt.key(Some(&ns), &name))
    });
    let prefix = single_key.clone().unwrap_or_else(|| ctx.list_prefix());
    // Reading the initial state and opening the watch at its revision happen before the
    // response starts, so a 410 can still be a plain error response.
    let (initial, from) = match start {
        Some(from) if !send_initial => (Vec::new(), from),
        _ => {
            let page = ctx.server.store.list(&prefix, None, 0, None)?;
            let mut objs = Vec::new();
            for (_, e) in &page.items {
                objs.push(decode_stored(&ctx.rt, e)?);
            }
            (objs, page.revision)
        }
    };
    let opened = match &single_key {
        Some(key) => ctx.server.store.watch_key(key, from),
        None => ctx.server.store.watch(&prefix, from),
    };
    let watch = match opened {
        Ok(w) => Some(w),
        Err(StoreError::Compacted { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let content_type = "application/json";
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    tokio::spawn(async move {
        let stream = Stream { ctx, params, tx };
        stream.run(initial, from, send_initial, watch).await;
    });
    Ok(crate::rest::streaming(content_type, body))
}

struct Stream {
    ctx: Ctx,
    params: WatchParams,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    async fn send(&self, kind: &str, obj: Value) -> bool {
        let obj = if self.params.table && kind != "ERROR" && kind != "BOOKMARK" {
            crate::table::table(
                &self.ctx.rt.strategy.columns(),
                &[obj],
                &self.params.include_object,
                json!({}),
            )
        } else {
            obj
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    fn matches(&self, obj: &Value) -> bool {
        self.ctx
            .matches(obj, &self.params.labels, &self.params.fields)
    }

    fn bookmark(&self, revision: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.ctx.rt.kind, "apiVersion": self.ctx.rt.api_version(), "metadata": meta})
    }

    async fn run(
        self,
        initial: Vec<Value>,
        from: u64,
        send_initial: bool,
        watch: Option<atoll_store::Watch>,
    ) {
        let Some(mut watch) = watch else {
            let err = ApiError::gone(format!(
                "too old resource version: {from} ({})",
                self.ctx.server.store.compacted_revision()
            ));
            self.send("ERROR", err.status()).await;
            return;
        };
        for obj in initial {
            if self.matches(&obj) && !self.send("ADDED", obj).await {
                return;
            }
        }
        if send_initial && !self.send("BOOKMARK", self.bookmark(from, true)).await {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.params.timeout;
        let mut quiet = tokio::time::interval(self.ctx.server.config.bookmark_interval);
        quiet.tick().await;
        enum Next {
            Stop,
            Bookmark,
            Batch(Result<Vec<Event>, StoreError>),
        }
        loop {
            let next = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => Next::Stop,
                _ = self.tx.closed() => Next::Stop,
                _ = quiet.tick(), if self.params.bookmarks => Next::Bookmark,
                batch = watch.next_batch() => Next::Batch(batch),
            };
            match next {
                Next::Stop => return,
                // Every event up to the cursor has been delivered (or did not concern us).
                Next::Bookmark => {
                    if !self
                        .send("BOOKMARK", self.bookmark(watch.cursor(), false))
                        .await
                    {
                        return;
                    }
                }
                Next::Batch(Ok(events)) => {
                    for e in events {
                        if !self.deliver(&e).await {
                            return;
                        }
                    }
                }
                Next::Batch(Err(StoreError::Compacted { requested, oldest })) => {
                    let err =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})"));
                    self.send("ERROR", err.status()).await;
                    return;
                }
                Next::Batch(Err(_)) => return,
            }
        }
    }

    /// The event's object as stored, with the event's revision as its `resourceVersion` (for a
    /// deletion, the revision of the deletion), in one watch line; never decoded.
    fn raw_line(&self, kind: &str, e: &Event) -> Option<Bytes> {
        let entry = atoll_store::Entry {
            value: e.value.clone(),
            mod_revision: e.revision,
            create_revision: e.create_revision,
        };
        let obj = object::stored_bytes(&self.ctx.rt, &entry).ok()?;
        let mut line = Vec::with_capacity(obj.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&obj);
        line.extend_from_slice(b"}\n");
        Some(Bytes::from(line))
    }

    /// For a watch selected only by `metadata.name` / `metadata.namespace` (a client watching
    /// one object): whether the event's object matches, from its key alone. Names and
    /// namespaces never change, so the object matched before the event exactly when it matches
    /// now. `None` when other selectors need the object itself.
    fn matches_by_key(&self, key: &str) -> Option<bool> {
        if !self.params.labels.0.is_empty() || self.params.fields.0.is_empty() {
            return None;
        }
        let mut parts = key.rsplit('/');
        let name = parts.next()?;
        let namespace = if self.ctx.rt.namespaced {
            parts.next()?
        } else {
            ""
        };
        let mut all = true;
        for r in &self.params.fields.0 {
            let value = match r.field.as_str() {
                "metadata.name" => name,
                "metadata.namespace" => namespace,
                _ => return None,
            };
            all &= (value == r.value) == r.equal;
        }
        Some(all)
    }

    async fn deliver(&self, e: &Event) -> bool {
        if !self.params.table
            && let Some(matches) = self.matches_by_key(&e.key)
        {
            if !matches {
                return true;
            }
            if let Some(line) = self.raw_line(kind_name(e.kind), e) {
                return self.tx.send(line).await.is_ok();
            }
        }
        let selective = !self.params.labels.0.is_empty() || !self.params.fields.0.is_empty();
        if !selective && !self.params.table {
            // Every object matches: send the stored bytes with their revision, undecoded.
            if let Some(line) = self.raw_line(kind_name(e.kind), e) {
                return self.tx.send(line).await.is_ok();
            }
        }
        let decoded = &self.ctx.server.watch_decoded;
        let rt = &self.ctx.rt;
        let Some(new) = decoded.get(rt, &e.value, e.revision, e.create_revision) else {
            return true;
        };
        let now_matches = self.matches(&new);
        // Without selectors every object matches, so the previous value need not be decoded.
        // Without the previous value, assume it matched: a spurious DELETED is harmless.
        let was_matching = match &e.prev {
            Some(p) if selective => decoded
                .get(rt, &p.value, p.mod_revision, e.create_revision)
                .is_some_and(|o| self.matches(&o)),
            _ => e.kind != EventKind::Added,
        };
        let kind = match (e.kind, was_matching, now_matches) {
            (EventKind::Deleted, true, _) => "DELETED",
            (EventKind::Deleted, false, _) => return true,
            (EventKind::Added, _, true) => "ADDED",
            (EventKind::Modified, true, true) => "MODIFIED",
            (EventKind::Modified, false, true) => "ADDED",
            (EventKind::Modified, true, false) => "DELETED",
            _ => return true,
        };
        if !self.params.table
            && let Some(line) = self.raw_line(kind, e)
        {
            return self.tx.send(line).await.is_ok();
        }
        let mut obj = (*new).clone();
        if kind == "DELETED" {
            // A deleted object carries the revision of its deletion.
            object::meta_mut(&mut obj)
                .insert("resourceVersion".into(), json!(e.revision.to_string()));
        }
        self.send(kind, obj).await
    }
}

/// The watch event type of a store event.
fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Added => "ADDED",
        EventKind::Modified => "MODIFIED",
        EventKind::Deleted => "DELETED",
    }
}

/// Objects of recent events decoded for selective watches, shared by all of them. With many
/// watches on one resource, each with its own selector (a node agent per node on pods, by
/// `spec.nodeName`), an event is then decoded once to be matched, not once per watch; the
/// watches all read the same events at about the same time, so a small window suffices.
#[derive(Default)]
pub(crate) struct DecodeCache(Mutex<HashMap<DecodeKey, Arc<Value>>>);

/// The resource type, the revision, and the stored bytes' address and length (every watch of
/// an event holds the same bytes).
type DecodeKey = (usize, u64, usize, usize);

const DECODE_CACHE_ENTRIES: usize = 4096;

impl DecodeCache {
    fn get(
        &self,
        rt: &Arc<ResourceType>,
        value: &Bytes,
        revision: u64,
        create_revision: u64,
    ) -> Option<Arc<Value>> {
        let key = (
            Arc::as_ptr(rt) as usize,
            revision,
            value.as_ptr() as usize,
            value.len(),
        );
        if let Some(v) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Some(v.clone());
        }
        // Decoded outside the lock; two watches may both decode an event, neither waits.
        let entry = atoll_store::Entry {
            value: value.clone(),
            mod_revision: revision,
            create_revision,
        };
        let obj = Arc::new(decode_stored(rt, &entry).ok()?);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= DECODE_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, obj.clone());
        Some(obj)
    }
}
