//! The exporter: a bounded queue and one background thread that batches,
//! encodes and sends spans to an OTLP/HTTP collector.
//!
//! Guarantees (R15, P11, P12):
//!
//! - [`Exporter::export`] never blocks and never fails: a span that finds
//!   the queue full, or the exporter shut down, is dropped and counted.
//! - Encoding and sending happen on the background thread only.
//! - A batch is retried, with exponential backoff, on connection errors,
//!   timeouts and the statuses OTLP calls retryable (429, 502, 503, 504;
//!   `Retry-After` honoured), until the configured timeout; then it counts
//!   as failed.
//! - [`Exporter::flush`] and [`Exporter::shutdown`] return within their
//!   timeout: they bring the background thread's deadline forward, and
//!   what cannot be sent by then is counted (`failed` if a request was
//!   tried, `dropped` if not).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::otlp;
use crate::record::{EventRecord, Link, SpanRecord};

/// Sends spans to an OTLP/HTTP collector from a background thread.
#[derive(Debug)]
pub struct Exporter {
    shared: Arc<Shared>,
    queue_size: usize,
    batch_size: usize,
}

/// How many spans went where.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Accepted by the collector.
    pub exported: u64,
    /// Never sent: the queue was full, the exporter shut down, or the
    /// deadline of a flush or shutdown passed before they were tried.
    pub dropped: u64,
    /// Sent, and not accepted: the collector was unreachable or refused
    /// them, until the retries ran out.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Shared {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// No more spans are taken.
    closed: AtomicBool,
    /// The background thread has ended.
    finished: AtomicBool,
    /// What waits for the background thread. The application's threads
    /// hold the lock only to push; the thread only to take everything.
    queue: Mutex<Queue>,
    /// Wakes the background thread: a batch is full, a flush or shutdown
    /// is asked for, or the exporter is dropped. Not for each span: a
    /// wake-up per span would cost the application a system call.
    ready: Condvar,
    hurry: Mutex<Hurry>,
    /// Wakes the background thread from a backoff pause when hurried.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    items: Vec<Item>,
    /// Spans among `items`.
    spans: usize,
    requests: Vec<Request>,
    /// The exporter was dropped: send what is left and end.
    dropped: bool,
}

/// A deadline set by a flush or shutdown that the background thread must
/// meet, whatever the batch's own.
#[derive(Debug, Default)]
struct Hurry {
    deadline: Option<Instant>,
    /// Bumped at each request, so a pause in progress ends.
    serial: u64,
}

#[derive(Debug)]
enum Item {
    Span(SpanRecord),
    Event(u64, EventRecord),
    Link(u64, Link),
}

#[derive(Debug)]
struct Request {
    shutdown: bool,
    deadline: Instant,
    ack: SyncSender<()>,
}

/// Events and links that wait for their span's end.
struct Pending {
    events: Vec<EventRecord>,
    links: Vec<Link>,
    since: Instant,
}

/// Spans at most with events or links waiting for their end; and how many
/// events (as OpenTelemetry's default limit) and links each keeps.
const MAX_PENDING: usize = 4096;
const MAX_EVENTS: usize = 128;
const MAX_LINKS: usize = 128;
/// Events of a span that has not ended in this long are forgotten (an
/// event that came after its span's end waits for nothing).
const PENDING_FOR: Duration = Duration::from_secs(3600);

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

// === impl Exporter ===

impl Exporter {
    /// Starts the background thread.
    pub fn new(config: Config) -> std::io::Result<Exporter> {
        let shared = Arc::new(Shared::default());
        let (queue_size, batch_size) = (config.queue_size.max(1), config.batch_size.max(1));
        let worker = Worker {
            shared: Arc::clone(&shared),
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .user_agent(concat!("pykregistry/", env!("CARGO_PKG_VERSION")))
                    .build(),
            ),
            batch: Vec::new(),
            pending: HashMap::new(),
            config,
        };
        std::thread::Builder::new()
            .name("pykregistry-otlp".into())
            .spawn(move || worker.run())?;
        Ok(Exporter {
            shared,
            queue_size,
            batch_size,
        })
    }

    /// Queues a span at its end; never waits for the background thread.
    /// Dropped (and counted) if the queue is full or the exporter shut down.
    pub fn export(&self, span: SpanRecord) {
        if !self.push(Item::Span(span)) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an event of the span with span id `parent`: it is sent as a
    /// span event when that span ends. Dropped if the queue is full.
    pub fn event(&self, parent: u64, event: EventRecord) {
        self.push(Item::Event(parent, event));
    }

    /// Notes that the span with span id `span` follows from `link`: sent as
    /// a link when that span ends. Dropped if the queue is full.
    pub fn link(&self, span: u64, link: Link) {
        self.push(Item::Link(span, link));
    }

    /// Whether `item` was queued.
    fn push(&self, item: Item) -> bool {
        if self.shared.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut queue = self.shared.lock_queue();
        if queue.items.len() >= self.queue_size {
            return false;
        }
        let span = matches!(item, Item::Span(_));
        queue.items.push(item);
        queue.spans += usize::from(span);
        let full = span && queue.spans == self.batch_size;
        drop(queue);
        if full {
            self.shared.ready.notify_one();
        }
        true
    }

    /// Sends every span queued so far; whether that was done within
    /// `timeout` (spans that were not are counted as dropped or failed).
    #[allow(clippy::must_use_candidate)] // often called for its effect alone
    pub fn flush(&self, timeout: Duration) -> bool {
        if self.shared.finished.load(Ordering::Acquire) {
            return true;
        }
        self.request(false, deadline(timeout))
    }

    /// Sends every span queued so far and stops the background thread;
    /// later spans are dropped. Whether that was done within `timeout`.
    /// Calling it again only waits for the first call's work.
    #[allow(clippy::must_use_candidate)] // often called for its effect alone
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = deadline(timeout);
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            // Shut down already: wait for the thread to end.
            while !self.shared.finished.load(Ordering::Acquire) {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            return true;
        }
        self.request(true, deadline)
    }

    /// Whether [`Exporter::shutdown`] was called.
    #[must_use]
    pub fn is_shut_down(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> Counts {
        Counts {
            exported: self.shared.exported.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Hurries the background thread to `deadline`, asks it to flush (or
    /// shut down) and waits for its answer until then.
    fn request(&self, shutdown: bool, deadline: Instant) -> bool {
        let (ack, answer) = mpsc::sync_channel(1);
        {
            let mut hurry = self
                .shared
                .hurry
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            hurry.deadline = Some(hurry.deadline.map_or(deadline, |d| d.min(deadline)));
            hurry.serial += 1;
        }
        self.shared.wake.notify_all();
        self.shared.lock_queue().requests.push(Request {
            shutdown,
            deadline,
            ack,
        });
        self.shared.ready.notify_one();
        answer
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl Drop for Exporter {
    /// The background thread sends what is left, within the configured
    /// timeout, and ends.
    fn drop(&mut self) {
        self.shared.lock_queue().dropped = true;
        self.shared.ready.notify_one();
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `timeout` from now; far away if it does not fit.
fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

// === impl Worker ===

/// The background thread's state.
struct Worker {
    shared: Arc<Shared>,
    agent: ureq::Agent,
    config: Config,
    batch: Vec<SpanRecord>,
    pending: HashMap<u64, Pending>,
}

/// What became of one request.
enum Outcome {
    Accepted,
    /// Worth trying again, after the pause the collector asked for, if any.
    Retry(Option<Duration>),
    Refused,
}

impl Worker {
    fn run(mut self) {
        let mut due = Instant::now() + self.config.delay;
        let mut items = Vec::new();
        loop {
            let (requests, dropped) = {
                let mut queue = self.shared.lock_queue();
                loop {
                    let now = Instant::now();
                    if queue.spans >= self.config.batch_size
                        || !queue.requests.is_empty()
                        || queue.dropped
                        || now >= due
                    {
                        break;
                    }
                    queue = self
                        .shared
                        .ready
                        .wait_timeout(queue, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                std::mem::swap(&mut items, &mut queue.items);
                queue.spans = 0;
                (std::mem::take(&mut queue.requests), queue.dropped)
            };
            for item in items.drain(..) {
                self.take(item);
            }
            let now = Instant::now();
            let tick = now >= due;
            if tick {
                self.pending
                    .retain(|_, p| now.duration_since(p.since) < PENDING_FOR);
                due = now + self.config.delay;
            }
            if requests.is_empty() {
                if self.batch.len() >= self.config.batch_size || tick || dropped {
                    self.send(None);
                }
            } else {
                let deadline = requests.iter().map(|r| r.deadline).min();
                self.send(deadline);
                for r in &requests {
                    self.unhurry(r.deadline);
                }
            }
            if dropped || requests.iter().any(|r| r.shutdown) {
                self.finish();
                for r in requests {
                    let _ = r.ack.try_send(());
                }
                return;
            }
            for r in requests {
                let _ = r.ack.try_send(());
            }
        }
    }

    /// One item taken off the queue.
    fn take(&mut self, item: Item) {
        match item {
            Item::Span(mut span) => {
                if let Some(p) = self.pending.remove(&span.span_id) {
                    span.events = p.events;
                    span.links = p.links;
                }
                self.batch.push(span);
            }
            Item::Event(parent, event) => {
                if let Some(p) = self.pending_of(parent) {
                    if p.events.len() < MAX_EVENTS {
                        p.events.push(event);
                    }
                }
            }
            Item::Link(span, link) => {
                if let Some(p) = self.pending_of(span) {
                    if p.links.len() < MAX_LINKS {
                        p.links.push(link);
                    }
                }
            }
        }
    }

    /// Stops: spans queued meanwhile (they raced the shutdown) are dropped.
    fn finish(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let queue = std::mem::take(&mut *self.shared.lock_queue());
        self.shared
            .dropped
            .fetch_add(queue.spans as u64, Ordering::Relaxed);
        self.shared.finished.store(true, Ordering::Release);
    }

    fn pending_of(&mut self, span: u64) -> Option<&mut Pending> {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&span) {
            return None;
        }
        Some(self.pending.entry(span).or_insert_with(|| Pending {
            events: Vec::new(),
            links: Vec::new(),
            since: Instant::now(),
        }))
    }

    /// Clears the hurry of the request with `deadline`, unless a later
    /// request set an earlier one.
    fn unhurry(&self, deadline: Instant) {
        let mut hurry = self
            .shared
            .hurry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if hurry.deadline == Some(deadline) {
            hurry.deadline = None;
        }
    }

    /// The deadline a flush or shutdown set, if any.
    fn hurried(&self) -> Option<Instant> {
        self.shared
            .hurry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadline
    }

    /// Sends the batch, in requests of at most `batch_size` spans, each
    /// within the configured timeout and `deadline`.
    fn send(&mut self, deadline: Option<Instant>) {
        while !self.batch.is_empty() {
            let rest = self
                .batch
                .split_off(self.batch.len().min(self.config.batch_size));
            let spans = std::mem::replace(&mut self.batch, rest);
            let own = Instant::now() + self.config.timeout;
            self.send_one(spans, deadline.map_or(own, |d| d.min(own)));
        }
    }

    fn send_one(&self, spans: Vec<SpanRecord>, deadline: Instant) {
        let n = spans.len() as u64;
        let body = otlp::encode(&self.config.resource, spans);
        let mut backoff = FIRST_BACKOFF;
        let mut tried = false;
        loop {
            let deadline = self.hurried().map_or(deadline, |h| h.min(deadline));
            let now = Instant::now();
            if now >= deadline {
                let count = if tried {
                    &self.shared.failed
                } else {
                    &self.shared.dropped
                };
                count.fetch_add(n, Ordering::Relaxed);
                return;
            }
            tried = true;
            match self.post(&body, deadline - now) {
                Outcome::Accepted => {
                    self.shared.exported.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Outcome::Refused => {
                    self.shared.failed.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Outcome::Retry(after) => {
                    let wait = after.unwrap_or(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let until = Instant::now() + wait;
                    if until >= self.hurried().map_or(deadline, |h| h.min(deadline)) {
                        // No time for another try.
                        self.shared.failed.fetch_add(n, Ordering::Relaxed);
                        return;
                    }
                    self.pause(until);
                }
            }
        }
    }

    /// Waits until `until`, or until a flush or shutdown hurries it.
    fn pause(&self, until: Instant) {
        let mut hurry = self
            .shared
            .hurry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let serial = hurry.serial;
        loop {
            let now = Instant::now();
            if now >= until || hurry.serial != serial {
                return;
            }
            hurry = self
                .shared
                .wake
                .wait_timeout(hurry, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn post(&self, body: &[u8], timeout: Duration) -> Outcome {
        let mut request = self
            .agent
            .post(&self.config.endpoint)
            .header("Content-Type", "application/x-protobuf");
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let result = request
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body);
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read to its end, so the connection can be used again.
                let _ = response
                    .into_body()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec();
                match status {
                    200..=299 => Outcome::Accepted,
                    429 | 502 | 503 | 504 => Outcome::Retry(after),
                    _ => Outcome::Refused,
                }
            }
            Err(
                ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::HostNotFound
                | ureq::Error::ConnectionFailed
                | ureq::Error::Protocol(_),
            ) => Outcome::Retry(None),
            Err(_) => Outcome::Refused,
        }
    }
}
