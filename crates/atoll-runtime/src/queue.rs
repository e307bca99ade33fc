//! A work queue of keys to reconcile, shared by the cluster's and the hub's controllers.
//!
//! # Guarantees
//! - A key is at most once in the queue and at most once in flight: adding a queued key does
//!   nothing; adding a running key runs it once more after it finishes.
//! - Keys run in the order they were first added.
//! - A failed reconcile is retried with back-off (100 ms doubling to 30 s), reset by a success.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub struct WorkQueue<K> {
    inner: Arc<(Mutex<State<K>>, Notify)>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
        }
    }
}

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    running: HashSet<K>,
    /// Changed while running: queue again when done.
    dirty: HashSet<K>,
}

impl<K> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            inner: Arc::new((
                Mutex::new(State {
                    queue: VecDeque::new(),
                    queued: HashSet::new(),
                    running: HashSet::new(),
                    dirty: HashSet::new(),
                }),
                Notify::new(),
            )),
        }
    }
}

impl<K> WorkQueue<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    pub fn new() -> WorkQueue<K> {
        WorkQueue::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, key: K) {
        let mut s = self.state();
        if s.running.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.queue.push_back(key);
            drop(s);
            self.inner.1.notify_one();
        }
    }

    pub fn add_after(&self, key: K, after: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            q.add(key);
        });
    }

    /// How many keys wait (not counting those running).
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn next(&self) -> K {
        loop {
            {
                let mut s = self.state();
                if let Some(k) = s.queue.pop_front() {
                    s.queued.remove(&k);
                    s.running.insert(k.clone());
                    if !s.queue.is_empty() {
                        self.inner.1.notify_one();
                    }
                    return k;
                }
            }
            self.inner.1.notified().await;
        }
    }

    fn done(&self, key: &K) {
        let mut s = self.state();
        s.running.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.clone()) {
            s.queue.push_back(key.clone());
            drop(s);
            self.inner.1.notify_one();
        }
    }

    /// Start `workers` tasks reconciling keys with `f`; an error retries with back-off, an
    /// `Ok(Some(d))` asks to be run again after `d`. The tasks run until aborted (their
    /// handles) or the runtime ends.
    pub fn run<F, Fut, E>(
        &self,
        workers: usize,
        name: &'static str,
        f: F,
    ) -> Vec<tokio::task::JoinHandle<()>>
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Duration>, E>> + Send + 'static,
        E: Display,
    {
        let f = Arc::new(f);
        let failures: Arc<Mutex<HashMap<K, u32>>> = Default::default();
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let q = self.clone();
            let f = f.clone();
            let failures = failures.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    let key = q.next().await;
                    let result = f(key.clone()).await;
                    q.done(&key);
                    match result {
                        Ok(again) => {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&key);
                            if let Some(d) = again {
                                q.add_after(key, d);
                            }
                        }
                        Err(e) => {
                            let n = {
                                let mut m = failures.lock().unwrap_or_else(|p| p.into_inner());
                                let n = m.entry(key.clone()).or_default();
                                *n = n.saturating_add(1);
                                *n
                            };
                            let delay = retry_delay(n);
                            tracing::warn!(controller = name, key = ?key, error = %e, "reconcile failed; retrying in {delay:?}");
                            q.add_after(key, delay);
                        }
                    }
                }
            }));
        }
        handles
    }
}

/// 100 ms after the first failure, doubling, at most 30 s.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(9)).min(30_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_runs_once_at_a_time_and_again_if_changed_meanwhile() {
        let q: WorkQueue<&'static str> = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a"); // changed while running
        assert_eq!(q.len(), 1, "not queued twice while running");
        q.done(&"a");
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[test]
    fn retries_back_off() {
        let ms: Vec<u128> = [1, 2, 3, 9, 50]
            .iter()
            .map(|n| retry_delay(*n).as_millis())
            .collect();
        assert_eq!(ms, [200, 400, 800, 30_000, 30_000]);
    }
}
