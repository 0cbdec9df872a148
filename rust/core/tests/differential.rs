//! Differential test: the same random sequences of `tracing-core` calls
//! driven through our [`Registry`] and through `tracing-subscriber`'s
//! `Registry` (pinned at `=0.3.20`, whose enter and exit take references
//! like ours) under a layer that records `on_close`, so that it clears
//! closed spans. After every call the two must agree on what it returned,
//! on which spans are live, on each live span's parent, on every context's
//! current span, and on the order in which spans closed.
//!
//! Both sides are driven only through `tracing_core::Dispatch`
//! (`new_span` with root, contextual and explicit parents, `clone_span`,
//! `try_close`, `enter`, `exit`, `current_span`), each call made with that
//! side's dispatcher as the default (tracing-subscriber releases parents
//! and stack entries through the default dispatcher). Contexts are threads:
//! two worker threads per case, each running every call on both sides.
//! Spans are matched by creation order, not by ID.
//!
//! The sequences avoid calls that panic in tracing-subscriber; what we do
//! instead is the documented difference, tested at the end of this file:
//!
//! - `try_close` on an ID that is not live: tracing-subscriber panics; ours
//!   returns false through `Subscriber` (an error from the core) and
//!   changes nothing (SPEC R4).
//! - `clone_span` on an ID that is not live: tracing-subscriber increments
//!   a count, then panics; ours fails without touching any count (R3). The
//!   `Subscriber` trait has no error channel, so our impl panics too.
//! - `enter` on an ID that is not live: tracing-subscriber pushes it, then
//!   panics, leaving the stack holding it; ours leaves the stack as it was
//!   (R5).
//! - `exit`, and the release of a parent when a child closes, go through
//!   the *default* dispatcher in tracing-subscriber, so doing either while
//!   another dispatcher is the default leaks the span; ours releases
//!   through its own registry (SPEC section 2).
//! - An `exit` that releases the last reference to a span with a parent:
//!   tracing-subscriber leaks the parent's reference even with the right
//!   default dispatcher (the release is a `get_default` nested in the one
//!   `exit` made, which yields no dispatcher; releases after 0.3.20 no
//!   longer take references on enter, tokio-rs/tracing#3331); ours closes
//!   the parent. The sequences steer around it (see `exit`).
//! - `record`: tracing-subscriber's `Registry` stores no fields (layers
//!   do), ours does; not compared.
//!
//! ```text
//! cargo test -p pykregistry-core --test differential
//! PROPTEST_CASES=10000 cargo test -p pykregistry-core --release --test differential
//! ```

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use common::Recorder;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use pykregistry_core::{Id, Registry};
use tracing_core::callsite::Callsite;
use tracing_core::dispatcher::{self, Dispatch};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::span::{self, Attributes};
use tracing_core::subscriber::Interest;
use tracing_core::{Level, Metadata};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// How many contexts (threads) a case drives.
const CONTEXTS: usize = 2;

// === the static callsite every span comes from ===

struct DiffCallsite;

static CALLSITE: DiffCallsite = DiffCallsite;

static META: Metadata<'static> = tracing_core::metadata! {
    name: "differential",
    target: "differential",
    level: Level::INFO,
    fields: &[],
    callsite: &CALLSITE,
    kind: Kind::SPAN,
};

impl Callsite for DiffCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &META
    }
}

fn field_set() -> &'static FieldSet {
    META.fields()
}

// === tracing-subscriber's side ===

/// A layer that records closes (and so makes the registry clear closed
/// spans), checking that each closing span is still readable.
#[derive(Debug, Clone, Default)]
struct CloseLog(Arc<Mutex<Vec<u64>>>);

impl<S> tracing_subscriber::Layer<S> for CloseLog
where
    S: tracing_core::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        assert!(ctx.span(&id).is_some(), "on_close: span not readable");
        lock(&self.0).push(id.into_u64());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A live span as one side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    parent: Option<u64>,
}

/// Both subscribers of one case.
struct Sides {
    ours: Registry<Recorder>,
    ours_dispatch: Dispatch,
    theirs_dispatch: Dispatch,
    theirs_closes: CloseLog,
}

impl Sides {
    fn new() -> Self {
        let ours = Recorder::registry();
        let theirs_closes = CloseLog::default();
        let theirs = tracing_subscriber::registry().with(theirs_closes.clone());
        Self {
            ours_dispatch: Dispatch::new(ours.clone()),
            ours,
            theirs_dispatch: Dispatch::new(theirs),
            theirs_closes,
        }
    }

    fn theirs_live(&self, id: u64) -> Option<Live> {
        let registry = self
            .theirs_dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .expect("the layered registry");
        let span = registry.span(&span::Id::from_u64(id))?;
        Some(Live {
            parent: span.parent().map(|p| p.id().into_u64()),
        })
    }

    fn ours_live(&self, id: u64) -> Option<Live> {
        let span = self.ours.get(Id::from_u64(id).ok()?)?;
        Some(Live {
            parent: span.parent_id().map(Id::into_u64),
        })
    }
}

// === the calls ===

/// One `tracing-core` call, with one side's IDs.
#[derive(Debug, Clone, Copy)]
enum Call {
    NewRoot,
    NewContextual,
    NewChildOf(u64),
    Clone(u64),
    Close(u64),
    Enter(u64),
    Exit(u64),
    Current,
}

/// What a call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Id(u64),
    Closed(bool),
    Current(Option<u64>),
    Done,
}

fn run(dispatch: &Dispatch, call: Call) -> Out {
    dispatcher::with_default(dispatch, || {
        let values = field_set().value_set(&[]);
        let new = |attrs: Attributes<'_>| Out::Id(dispatch.new_span(&attrs).into_u64());
        match call {
            Call::NewRoot => new(Attributes::new_root(&META, &values)),
            Call::NewContextual => new(Attributes::new(&META, &values)),
            Call::NewChildOf(p) => new(Attributes::child_of(span::Id::from_u64(p), &META, &values)),
            Call::Clone(id) => Out::Id(dispatch.clone_span(&span::Id::from_u64(id)).into_u64()),
            Call::Close(id) => Out::Closed(dispatch.try_close(span::Id::from_u64(id))),
            Call::Enter(id) => {
                dispatch.enter(&span::Id::from_u64(id));
                Out::Done
            }
            Call::Exit(id) => {
                dispatch.exit(&span::Id::from_u64(id));
                Out::Done
            }
            Call::Current => Out::Current(dispatch.current_span().id().map(span::Id::into_u64)),
        }
    })
}

/// A context: a thread that runs each call on both sides.
struct Worker {
    calls: Sender<(Call, Call)>,
    results: Receiver<(Out, Out)>,
    made: Cell<usize>,
}

impl Worker {
    fn spawn<'s>(scope: &'s thread::Scope<'s, '_>, sides: &'s Sides) -> Self {
        let (calls, call_rx) = channel::<(Call, Call)>();
        let (out_tx, results) = channel();
        scope.spawn(move || {
            for (ours, theirs) in call_rx {
                let out = (
                    run(&sides.ours_dispatch, ours),
                    run(&sides.theirs_dispatch, theirs),
                );
                if out_tx.send(out).is_err() {
                    return;
                }
            }
        });
        Self {
            calls,
            results,
            made: Cell::new(0),
        }
    }

    fn call(&self, ours: Call, theirs: Call) -> (Out, Out) {
        self.made.set(self.made.get() + 1);
        self.calls.send((ours, theirs)).expect("worker alive");
        self.results
            .recv()
            .expect("the worker panicked: tracing-subscriber was sent a call it panics on?")
    }
}

// === the random programs ===

#[derive(Debug, Clone)]
enum Action {
    NewRoot {
        ctx: usize,
    },
    NewContextual {
        ctx: usize,
    },
    /// An explicit parent: one the test holds a handle to.
    NewChild {
        ctx: usize,
        pick: Index,
    },
    Clone {
        ctx: usize,
        pick: Index,
    },
    Close {
        ctx: usize,
        pick: Index,
    },
    /// Enter a span the test holds a handle to.
    Enter {
        ctx: usize,
        pick: Index,
    },
    /// Exit a span entered in this context, or any span ever created.
    Exit {
        ctx: usize,
        pick: Index,
        entered: bool,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let ctx = 0..CONTEXTS;
    prop_oneof![
        2 => ctx.clone().prop_map(|ctx| Action::NewRoot { ctx }),
        3 => ctx.clone().prop_map(|ctx| Action::NewContextual { ctx }),
        3 => (ctx.clone(), any::<Index>()).prop_map(|(ctx, pick)| Action::NewChild { ctx, pick }),
        2 => (ctx.clone(), any::<Index>()).prop_map(|(ctx, pick)| Action::Clone { ctx, pick }),
        5 => (ctx.clone(), any::<Index>()).prop_map(|(ctx, pick)| Action::Close { ctx, pick }),
        4 => (ctx.clone(), any::<Index>()).prop_map(|(ctx, pick)| Action::Enter { ctx, pick }),
        4 => (ctx, any::<Index>(), any::<bool>())
            .prop_map(|(ctx, pick, entered)| Action::Exit { ctx, pick, entered }),
    ]
}

/// What the driver knows: which spans correspond, which handles it holds,
/// what each context entered. It does not predict the registries' answers;
/// it only avoids calls that panic in tracing-subscriber.
#[derive(Debug, Default)]
struct Driver {
    /// (ours, theirs) for every span created, in order.
    spans: Vec<(u64, u64)>,
    /// Theirs for ours.
    theirs_of: HashMap<u64, u64>,
    /// Handles held, as indices into `spans`.
    handles: Vec<usize>,
    /// Spans entered in each context, as indices into `spans`, in order.
    entered: Vec<Vec<usize>>,
    stats: Stats,
}

/// What the programs exercised, summed over a run: a generator that stopped
/// reaching one of these would make the comparison hollow.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    programs: usize,
    calls: usize,
    spans: usize,
    /// Contextual `new_span`s that found a current span to be the parent.
    contextual_children: usize,
    /// Calls after which more than one span had closed: cascades.
    cascades: usize,
    /// Exits that closed their span (a root: see `exit`).
    closing_exits: usize,
    /// Exits steered around tracing-subscriber's parent leak.
    steered_exits: usize,
    /// Closes seen by the last comparison.
    seen_closes: usize,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.programs += other.programs;
        self.calls += other.calls;
        self.spans += other.spans;
        self.contextual_children += other.contextual_children;
        self.cascades += other.cascades;
        self.closing_exits += other.closing_exits;
        self.steered_exits += other.steered_exits;
    }
}

impl Driver {
    fn created(&mut self, results: (Out, Out)) -> Result<(), TestCaseError> {
        let (Out::Id(ours), Out::Id(theirs)) = results else {
            return Err(TestCaseError::fail(format!(
                "new_span returned {results:?}"
            )));
        };
        prop_assert!(
            !self.theirs_of.contains_key(&ours),
            "our ID {} issued twice",
            ours
        );
        self.theirs_of.insert(ours, theirs);
        self.handles.push(self.spans.len());
        self.spans.push((ours, theirs));
        Ok(())
    }

    fn held(&self, pick: Index) -> Option<usize> {
        (!self.handles.is_empty()).then(|| *pick.get(&self.handles))
    }

    fn map(&self, ours: Option<u64>) -> Option<u64> {
        ours.map(|o| self.theirs_of[&o])
    }
}

fn step(
    driver: &mut Driver,
    sides: &Sides,
    workers: &[Worker],
    action: &Action,
) -> Result<(), TestCaseError> {
    match *action {
        Action::NewRoot { ctx } => {
            driver.created(workers[ctx].call(Call::NewRoot, Call::NewRoot))?;
        }
        Action::NewContextual { ctx } => {
            driver.created(workers[ctx].call(Call::NewContextual, Call::NewContextual))?;
            let (ours, _) = *driver.spans.last().unwrap();
            if sides.ours_live(ours).is_some_and(|s| s.parent.is_some()) {
                driver.stats.contextual_children += 1;
            }
        }
        Action::NewChild { ctx, pick } => {
            let Some(p) = driver.held(pick) else {
                return Ok(());
            };
            let (ours, theirs) = driver.spans[p];
            driver.created(workers[ctx].call(Call::NewChildOf(ours), Call::NewChildOf(theirs)))?;
        }
        Action::Clone { ctx, pick } => {
            let Some(s) = driver.held(pick) else {
                return Ok(());
            };
            let (ours, theirs) = driver.spans[s];
            let results = workers[ctx].call(Call::Clone(ours), Call::Clone(theirs));
            prop_assert_eq!(results, (Out::Id(ours), Out::Id(theirs)));
            driver.handles.push(s);
        }
        Action::Close { ctx, pick } => {
            if driver.handles.is_empty() {
                return Ok(());
            }
            let s = driver.handles.swap_remove(pick.index(driver.handles.len()));
            let (ours, theirs) = driver.spans[s];
            let (a, b) = workers[ctx].call(Call::Close(ours), Call::Close(theirs));
            prop_assert_eq!(a, b, "try_close of span #{}", s);
        }
        Action::Enter { ctx, pick } => {
            let Some(s) = driver.held(pick) else {
                return Ok(());
            };
            let (ours, theirs) = driver.spans[s];
            workers[ctx].call(Call::Enter(ours), Call::Enter(theirs));
            driver.entered[ctx].push(s);
        }
        Action::Exit { ctx, pick, entered } => {
            let s = if entered && !driver.entered[ctx].is_empty() {
                *pick.get(&driver.entered[ctx])
            } else if !driver.spans.is_empty() {
                pick.index(driver.spans.len())
            } else {
                return Ok(());
            };
            exit(driver, sides, &workers[ctx], ctx, s)?;
        }
    }
    Ok(())
}

/// Exits span `s` in context `ctx` on both sides.
///
/// When that exit would release the last reference to a span that has a
/// parent, tracing-subscriber 0.3.20 leaks the parent's reference (its
/// `exit` closes through `dispatcher::get_default`, and the parent's release
/// nested in it finds no dispatcher; later releases dropped references on
/// enter altogether, tokio-rs/tracing#3331). So the driver then holds a
/// clone across the exit and closes the span with `try_close` after it.
/// Which exits those are is read from our side; were our count wrong,
/// tracing-subscriber would leak and the comparison fail.
fn exit(
    driver: &mut Driver,
    sides: &Sides,
    worker: &Worker,
    ctx: usize,
    s: usize,
) -> Result<(), TestCaseError> {
    let (ours, theirs) = driver.spans[s];
    let entries = driver.entered[ctx].iter().filter(|&&e| e == s).count();
    let id = Id::from_u64(ours).unwrap();
    let closes_a_child = entries == 1
        && sides.ours.ref_count(id) == 1
        && sides.ours_live(ours).is_some_and(|s| s.parent.is_some());
    if closes_a_child {
        let results = worker.call(Call::Clone(ours), Call::Clone(theirs));
        prop_assert_eq!(results, (Out::Id(ours), Out::Id(theirs)));
    }
    if let Some(at) = driver.entered[ctx].iter().rposition(|&e| e == s) {
        driver.entered[ctx].remove(at);
    }
    worker.call(Call::Exit(ours), Call::Exit(theirs));
    if closes_a_child {
        driver.stats.steered_exits += 1;
        let results = worker.call(Call::Close(ours), Call::Close(theirs));
        prop_assert_eq!(results, (Out::Closed(true), Out::Closed(true)));
    } else if entries > 0 && sides.ours_live(ours).is_none() {
        driver.stats.closing_exits += 1;
    }
    Ok(())
}

/// Compares everything both sides can be asked.
fn compare(driver: &mut Driver, sides: &Sides, workers: &[Worker]) -> Result<(), TestCaseError> {
    let mut live = 0;
    for (n, &(ours, theirs)) in driver.spans.iter().enumerate() {
        let a = sides.ours_live(ours);
        let b = sides.theirs_live(theirs);
        prop_assert_eq!(a.is_some(), b.is_some(), "liveness of span #{}", n);
        if let (Some(a), Some(b)) = (a, b) {
            live += 1;
            prop_assert_eq!(driver.map(a.parent), b.parent, "parent of span #{}", n);
        }
    }
    prop_assert_eq!(sides.ours.len(), live, "our len() against the live spans");
    for (ctx, worker) in workers.iter().enumerate() {
        let (a, b) = worker.call(Call::Current, Call::Current);
        let (Out::Current(a), Out::Current(b)) = (a, b) else {
            unreachable!()
        };
        prop_assert_eq!(driver.map(a), b, "current span of context {}", ctx);
    }
    let ours: Vec<u64> = sides
        .ours
        .hooks()
        .closed_ids()
        .into_iter()
        .map(Id::into_u64)
        .collect();
    let theirs = lock(&sides.theirs_closes.0).clone();
    prop_assert_eq!(
        ours.iter().map(|o| driver.theirs_of[o]).collect::<Vec<_>>(),
        theirs,
        "close order"
    );
    if ours.len() >= driver.stats.seen_closes + 2 {
        driver.stats.cascades += 1;
    }
    driver.stats.seen_closes = ours.len();
    Ok(())
}

fn run_program(actions: &[Action]) -> Result<Stats, TestCaseError> {
    let sides = Sides::new();
    let mut driver = Driver {
        entered: vec![Vec::new(); CONTEXTS],
        ..Driver::default()
    };
    thread::scope(|scope| {
        let workers: Vec<Worker> = (0..CONTEXTS)
            .map(|_| Worker::spawn(scope, &sides))
            .collect();
        let result = drive(&mut driver, &sides, &workers, actions);
        driver.stats.calls = workers.iter().map(|w| w.made.get()).sum();
        result
    })?;
    prop_assert_eq!(sides.ours.len(), 0);
    prop_assert_eq!(
        sides.ours.hooks().closed_ids().len(),
        driver.spans.len(),
        "every span closed once"
    );
    driver.stats.programs = 1;
    driver.stats.spans = driver.spans.len();
    Ok(driver.stats)
}

/// Runs `actions`, then releases everything, comparing after every call.
fn drive(
    driver: &mut Driver,
    sides: &Sides,
    workers: &[Worker],
    actions: &[Action],
) -> Result<(), TestCaseError> {
    for action in actions {
        step(driver, sides, workers, action)?;
        compare(driver, sides, workers)?;
    }
    // Release everything: every entry, most recent first, then every
    // handle. Both sides must end empty, having closed alike.
    for (ctx, worker) in workers.iter().enumerate() {
        while let Some(&s) = driver.entered[ctx].last() {
            exit(driver, sides, worker, ctx, s)?;
            compare(driver, sides, workers)?;
        }
    }
    while let Some(s) = driver.handles.pop() {
        let (ours, theirs) = driver.spans[s];
        let (a, b) = workers[0].call(Call::Close(ours), Call::Close(theirs));
        prop_assert_eq!(a, b);
        compare(driver, sides, workers)?;
    }
    Ok(())
}

/// Programs of up to 150 calls; `PROPTEST_CASES` sets how many (256 by
/// default). Prints what the run exercised, and fails if it missed any of
/// it.
#[test]
fn registries_agree_on_parents_current_spans_liveness_and_close_order() {
    let mut runner = TestRunner::new(ProptestConfig::default());
    let total = Mutex::new(Stats::default());
    let result = runner.run(&prop::collection::vec(action(), 1..150), |actions| {
        let stats = run_program(&actions)?;
        lock(&total).add(&stats);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let total = *lock(&total);
    eprintln!("differential: {total:?}");
    assert!(total.programs >= 1);
    assert!(
        total.contextual_children > 0,
        "no contextual child: {total:?}"
    );
    assert!(total.cascades > 0, "no close cascade: {total:?}");
    assert!(total.closing_exits > 0, "no exit closed a span: {total:?}");
    assert!(total.steered_exits > 0, "no steered exit: {total:?}");
}

// === the documented differences, each tested on both sides ===

/// Runs `f` with `dispatch` as the default and reports whether it panicked.
fn panics(dispatch: &Dispatch, f: impl FnOnce(&Dispatch)) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        dispatcher::with_default(dispatch, || f(dispatch));
    }))
    .is_err()
}

fn new_root(dispatch: &Dispatch) -> span::Id {
    let values = field_set().value_set(&[]);
    dispatcher::with_default(dispatch, || {
        dispatch.new_span(&Attributes::new_root(&META, &values))
    })
}

#[test]
fn difference_try_close_on_a_closed_span_is_false_for_us_and_a_panic_for_them() {
    let sides = Sides::new();
    for dispatch in [&sides.ours_dispatch, &sides.theirs_dispatch] {
        let id = new_root(dispatch);
        assert!(dispatcher::with_default(dispatch, || dispatch.try_close(id.clone())));
    }
    let ours = new_root(&sides.ours_dispatch);
    let keep = new_root(&sides.ours_dispatch);
    assert!(sides.ours_dispatch.try_close(ours.clone()));
    assert!(!panics(&sides.ours_dispatch, |d| {
        assert!(!d.try_close(ours.clone()), "a second close is never true");
    }));
    assert_eq!(sides.ours.len(), 1, "and it changed nothing");
    assert_eq!(sides.ours.ref_count(Id::from(&keep)), 1);

    let theirs = new_root(&sides.theirs_dispatch);
    assert!(dispatcher::with_default(&sides.theirs_dispatch, || {
        sides.theirs_dispatch.try_close(theirs.clone())
    }));
    assert!(
        panics(&sides.theirs_dispatch, |d| {
            d.try_close(theirs.clone());
        }),
        "tracing-subscriber 0.3.20 panics on a second close"
    );
}

#[test]
fn difference_clone_of_a_closed_span_changes_no_count_here() {
    let registry = Registry::new();
    let parent = common::root(&registry, "parent");
    let child = common::child(&registry, "child", parent);
    assert_eq!(registry.try_close(child), Ok(true));
    // The core reports the error and touches nothing; through `Subscriber`
    // (which has no error channel) it is a panic, as in tracing-subscriber,
    // but still with no count changed.
    assert!(registry.clone_span(child).is_err());
    let dispatch = Dispatch::new(registry.clone());
    assert!(panics(&dispatch, |d| {
        d.clone_span(&child.into());
    }));
    assert_eq!(registry.ref_count(parent), 1);
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.try_close(parent), Ok(true));
    assert!(registry.is_empty());

    let theirs = Sides::new().theirs_dispatch;
    let id = new_root(&theirs);
    assert!(dispatcher::with_default(&theirs, || theirs.try_close(id.clone())));
    assert!(panics(&theirs, |d| {
        d.clone_span(&id);
    }));
}

#[test]
fn difference_entering_a_closed_span_leaves_our_stack_as_it_was() {
    let sides = Sides::new();
    let outer = new_root(&sides.ours_dispatch);
    let closed = new_root(&sides.ours_dispatch);
    assert!(sides.ours_dispatch.try_close(closed.clone()));
    let d = &sides.ours_dispatch;
    assert!(!panics(d, |d| {
        d.enter(&outer);
        d.enter(&closed);
        assert_eq!(
            d.current_span().id(),
            Some(&outer),
            "the bad enter pushed nothing"
        );
        d.exit(&closed);
        assert_eq!(d.current_span().id(), Some(&outer));
        d.exit(&outer);
        assert_eq!(d.current_span().id(), None);
    }));
    assert_eq!(sides.ours.ref_count(Id::from(&outer)), 1);

    // tracing-subscriber pushes first and panics in the clone.
    let t = &sides.theirs_dispatch;
    let closed = new_root(t);
    assert!(dispatcher::with_default(t, || t.try_close(closed.clone())));
    assert!(panics(t, |d| d.enter(&closed)));
}

#[test]
fn difference_exit_and_parent_release_do_not_depend_on_the_default_dispatcher() {
    let sides = Sides::new();
    for (name, dispatch) in [
        ("ours", &sides.ours_dispatch),
        ("theirs", &sides.theirs_dispatch),
    ] {
        let (entered, parent, child) = dispatcher::with_default(dispatch, || {
            let entered = new_root(dispatch);
            dispatch.enter(&entered);
            let parent = new_root(dispatch);
            let values = field_set().value_set(&[]);
            let child = dispatch.new_span(&Attributes::child_of(parent.clone(), &META, &values));
            assert!(!dispatch.try_close(parent.clone()));
            (entered, parent, child)
        });
        // Exit and close the child while no dispatcher is the default.
        assert!(!dispatch.try_close(entered.clone()));
        dispatch.exit(&entered);
        assert!(dispatch.try_close(child));
        let live = |id: &span::Id| match name {
            "ours" => sides.ours_live(id.into_u64()).is_some(),
            _ => sides.theirs_live(id.into_u64()).is_some(),
        };
        if name == "ours" {
            assert!(
                !live(&entered),
                "ours: the exit released the last reference"
            );
            assert!(
                !live(&parent),
                "ours: the child's close released the parent"
            );
            assert_eq!(sides.ours.len(), 0);
        } else {
            assert!(
                live(&entered),
                "theirs: the exit released through no dispatcher"
            );
            assert!(live(&parent), "theirs: the parent's reference leaked");
        }
    }
}

#[test]
fn difference_an_exit_that_closes_a_child_releases_its_parent_here_only() {
    let sides = Sides::new();
    for (name, dispatch) in [
        ("ours", &sides.ours_dispatch),
        ("theirs", &sides.theirs_dispatch),
    ] {
        let (parent, child) = dispatcher::with_default(dispatch, || {
            let parent = new_root(dispatch);
            let values = field_set().value_set(&[]);
            let child = dispatch.new_span(&Attributes::child_of(parent.clone(), &META, &values));
            dispatch.enter(&child);
            // The stack entry is now the child's only reference, and the
            // child the parent's only one.
            assert!(!dispatch.try_close(child.clone()));
            assert!(!dispatch.try_close(parent.clone()));
            dispatch.exit(&child);
            (parent, child)
        });
        if name == "ours" {
            assert!(sides.ours_live(child.into_u64()).is_none());
            assert!(
                sides.ours_live(parent.into_u64()).is_none(),
                "ours: the cascade ran"
            );
            assert_eq!(sides.ours.len(), 0);
        } else {
            assert!(sides.theirs_live(child.into_u64()).is_none());
            assert!(
                sides.theirs_live(parent.into_u64()).is_some(),
                "theirs: the parent's reference leaked"
            );
        }
    }
}
