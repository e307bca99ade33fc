//! The in-memory revision log: the window of recent events that watches and past lists read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backend::{StoredEvent, rebuild_prev};
use crate::{Event, Revision};

pub(crate) struct RevisionLog {
    /// Events with consecutive revisions, oldest first, with the time each was committed.
    events: VecDeque<(Event, Instant)>,
    /// Every event after this revision is in `events`.
    compacted: Revision,
}

impl RevisionLog {
    pub fn reload(
        compacted: Revision,
        stored: Vec<StoredEvent>,
        revision: Revision,
    ) -> RevisionLog {
        let now = Instant::now();
        let events: VecDeque<_> = rebuild_prev(stored)
            .into_iter()
            .filter(|e| e.revision > compacted)
            .map(|e| (e, now))
            .collect();
        // If the log on disk has a hole (it should not), only what follows the hole is usable.
        let compacted = match events.front() {
            Some((first, _)) => first.revision - 1,
            None => revision,
        };
        let mut log = RevisionLog { events, compacted };
        let expected = log.compacted + log.events.len() as u64;
        if expected != revision {
            tracing::warn!(
                expected,
                revision,
                "revision log does not reach the head; dropping it"
            );
            log.events.clear();
            log.compacted = revision;
        }
        log
    }

    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Events after `after` whose key starts with `prefix`, or `Err(oldest)` if `after` is before
    /// the window.
    pub fn since<'a>(
        &'a self,
        after: Revision,
        prefix: &'a str,
    ) -> Result<impl Iterator<Item = &'a Event> + 'a, Revision> {
        if after < self.compacted {
            return Err(self.compacted);
        }
        let skip = usize::try_from(after - self.compacted).unwrap_or(usize::MAX);
        Ok(self
            .events
            .iter()
            .skip(skip)
            .map(|(e, _)| e)
            .filter(move |e| e.key.starts_with(prefix)))
    }

    pub fn push(&mut self, event: Event, at: Instant) {
        self.events.push_back((event, at));
    }

    /// The revision the log will be compacted to once `incoming` more events are pushed.
    pub fn compaction_point(
        &self,
        incoming: usize,
        now: Instant,
        max_events: usize,
        max_age: Duration,
    ) -> Revision {
        let total = self.events.len() + incoming;
        let over = total.saturating_sub(max_events);
        let mut point = self.compacted;
        if over > 0 {
            let idx = over.min(self.events.len());
            if idx > 0 {
                point = self.events[idx - 1].0.revision;
            }
        }
        // Trim by age too, keeping at least the events of the last `max_age`.
        for (e, at) in &self.events {
            if now.duration_since(*at) > max_age {
                point = point.max(e.revision);
            } else {
                break;
            }
        }
        point
    }

    pub fn compact(&mut self, to: Revision) {
        while let Some((e, _)) = self.events.front() {
            if e.revision <= to {
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.compacted = self.compacted.max(to);
    }
}
