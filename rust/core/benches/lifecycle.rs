//! P6 and P7 of SPEC section 6, in one criterion run:
//!
//! - `lifecycle/*`: one span's `new_span` + `enter` + `exit` + `try_close`
//!   on this crate's `Registry` and on `tracing-subscriber`'s `Registry` with
//!   a no-op layer (so that closed spans are cleared), called directly
//!   through the `Subscriber` trait. P6: ours ≤ 1.0× theirs.
//! - `macros/*`: the same through the `tracing` macros (`info_span!` and
//!   `Span::enter`), as Rust code uses it; this adds the dispatcher's work
//!   (a `Span` holds a clone of the `Dispatch`), the same on both sides.
//! - `threads/*`: the direct lifecycle on 1 and 2 threads at once on one
//!   registry, as throughput (lifecycles per second over all threads). P7:
//!   2 threads ≥ 1.8× the throughput of 1.
//!
//! `cargo bench -p pykregistry-core --bench lifecycle` (`make bench-rust`).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracing::dispatcher::{self, Dispatch};
use tracing_core::callsite::Callsite;
use tracing_core::metadata::Kind;
use tracing_core::span::Attributes;
use tracing_core::subscriber::Interest;
use tracing_core::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::SubscriberExt;

/// A layer with every hook left to its default.
struct NoOp;

impl<S: Subscriber> tracing_subscriber::Layer<S> for NoOp {}

struct BenchCallsite;

static CALLSITE: BenchCallsite = BenchCallsite;

static META: Metadata<'static> = tracing_core::metadata! {
    name: "x",
    target: "bench",
    level: Level::INFO,
    fields: &[],
    callsite: &CALLSITE,
    kind: Kind::SPAN,
};

impl Callsite for BenchCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &META
    }
}

type Ours = pykregistry_core::Registry;

fn theirs() -> impl Subscriber + Send + Sync {
    tracing_subscriber::registry().with(NoOp)
}

/// One span's whole life, straight through the `Subscriber` trait.
#[inline]
fn lifecycle<S: Subscriber>(subscriber: &S) {
    let values = META.fields().value_set(&[]);
    let id = subscriber.new_span(&Attributes::new(&META, &values));
    subscriber.enter(&id);
    subscriber.exit(&id);
    black_box(subscriber.try_close(id));
}

fn lifecycle_vs_tracing_subscriber(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle");
    let ours = Ours::new();
    group.bench_function("pykregistry-core", |b| b.iter(|| lifecycle(&ours)));
    let theirs = theirs();
    group.bench_function("tracing-subscriber", |b| b.iter(|| lifecycle(&theirs)));
    group.finish();
}

/// One span's whole life through the `tracing` macros.
#[inline]
fn macro_lifecycle() {
    let span = tracing::info_span!("x");
    let entered = span.enter();
    black_box(&entered);
}

fn through_macros(c: &mut Criterion) {
    let mut group = c.benchmark_group("macros");
    let sides = [
        ("pykregistry-core", Dispatch::new(Ours::new())),
        ("tracing-subscriber", Dispatch::new(theirs())),
    ];
    for (name, dispatch) in sides {
        dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(macro_lifecycle));
        });
    }
    group.finish();
}

/// `iters` lifecycles on each of `threads` threads started together; the
/// time from their start until the last one is done.
fn on_threads<S: Subscriber + Send + Sync>(
    subscriber: &Arc<S>,
    threads: usize,
    iters: u64,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, subscriber) = (Arc::clone(&barrier), Arc::clone(subscriber));
            std::thread::spawn(move || {
                lifecycle(&*subscriber); // the thread's first span takes its slab seat
                barrier.wait();
                for _ in 0..iters {
                    lifecycle(&*subscriber);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for worker in workers {
        worker.join().expect("a bench thread panicked");
    }
    start.elapsed()
}

fn threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("threads");
    let ours = Arc::new(Ours::new());
    for threads in [1_u64, 2] {
        group.throughput(Throughput::Elements(threads));
        group.bench_function(format!("{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&ours, usize::try_from(threads).unwrap_or(1), iters));
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    lifecycle_vs_tracing_subscriber,
    through_macros,
    threads
);
criterion_main!(benches);
