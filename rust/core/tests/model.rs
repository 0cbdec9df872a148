//! Model-based property test: random sequences of span operations, on one
//! thread, run against the registry and against a reference model of
//! SPEC R2-R9, compared after every step.
//!
//! The operations: `new_span` with a root, contextual (the current span of
//! one of several contexts, or an ID that may have closed) or explicit
//! parent (live or not); `clone_span` and `try_close` on handles the test
//! holds and on IDs that are not live; `enter` and `exit` on [`SpanStack`]s
//! the test owns, one per modelled context, the way the bindings drive them;
//! `record`; lookups of IDs never issued. After every step the test checks
//! the live set and `len()`, each span's parent, scope and reference count
//! against R9 (handles + live children + non-duplicate stack entries), the
//! current span of every context, recorded fields, and the order in which
//! `on_close` saw spans close. Each case ends by releasing everything, after
//! which nothing may be live.
//!
//! 256 cases of up to 200 operations by default; `PROPTEST_CASES=10000`
//! runs more:
//!
//! ```text
//! cargo test -p pykregistry-core --test model
//! PROPTEST_CASES=10000 cargo test -p pykregistry-core --release --test model
//! ```

mod common;

use std::cell::Cell;
use std::collections::HashMap;

use common::{attrs, fields, Recorder};
use proptest::prelude::*;
use proptest::sample::Index;
use pykregistry_core::{Error, Id, Op, Parent, Registry, SpanStack, Value};

/// How many contexts (each with its own stack) a case models.
const CONTEXTS: usize = 3;

#[derive(Debug, Clone)]
enum Action {
    NewRoot,
    /// Contextual parent: the current span of context `ctx`.
    NewInContext {
        ctx: usize,
    },
    /// Contextual parent given as an issued ID, which may have closed.
    NewContextualStale {
        pick: Index,
    },
    /// Explicit parent: an issued ID, live or not.
    NewExplicit {
        pick: Index,
    },
    /// `clone_span` on an issued ID, live or not.
    Clone {
        pick: Index,
    },
    /// `try_close` on a handle the test holds.
    Close {
        pick: Index,
    },
    /// `try_close` on an issued ID that is not live, or on a made-up one.
    CloseNotLive {
        pick: Index,
        raw: u64,
    },
    /// Enter an issued ID, live or not, in context `ctx`.
    Enter {
        ctx: usize,
        pick: Index,
    },
    /// Exit, in context `ctx`, an ID on its stack or any issued ID.
    Exit {
        ctx: usize,
        pick: Index,
        from_stack: bool,
    },
    Record {
        pick: Index,
        value: i64,
    },
    /// Look up an ID that was probably never issued.
    Lookup {
        raw: u64,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let ctx = 0..CONTEXTS;
    prop_oneof![
        3 => Just(Action::NewRoot),
        3 => ctx.clone().prop_map(|ctx| Action::NewInContext { ctx }),
        1 => any::<Index>().prop_map(|pick| Action::NewContextualStale { pick }),
        3 => any::<Index>().prop_map(|pick| Action::NewExplicit { pick }),
        2 => any::<Index>().prop_map(|pick| Action::Clone { pick }),
        5 => any::<Index>().prop_map(|pick| Action::Close { pick }),
        1 => (any::<Index>(), any::<u64>()).prop_map(|(pick, raw)| Action::CloseNotLive { pick, raw }),
        4 => (ctx.clone(), any::<Index>()).prop_map(|(ctx, pick)| Action::Enter { ctx, pick }),
        4 => (ctx, any::<Index>(), any::<bool>())
            .prop_map(|(ctx, pick, from_stack)| Action::Exit { ctx, pick, from_stack }),
        1 => (any::<Index>(), any::<i64>()).prop_map(|(pick, value)| Action::Record { pick, value }),
        1 => any::<u64>().prop_map(|raw| Action::Lookup { raw }),
    ]
}

/// The reference model's view of one span.
#[derive(Debug)]
struct ModelSpan {
    name: String,
    parent: Option<Id>,
    refs: usize,
    live: bool,
    /// The value last recorded as field `n`.
    n: Option<i64>,
}

/// The reference model: R2-R9 written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    spans: HashMap<Id, ModelSpan>,
    /// Every ID issued, in order.
    issued: Vec<Id>,
    /// Handles the test holds (an ID once per handle).
    handles: Vec<Id>,
    /// Each context's stack: (span, duplicate).
    stacks: Vec<Vec<(Id, bool)>>,
    /// Spans in the order they closed.
    closed: Vec<Id>,
    /// How many of the registry's closes [`check`] has seen.
    checked_closes: Cell<usize>,
}

impl Model {
    fn new() -> Self {
        Self {
            stacks: vec![Vec::new(); CONTEXTS],
            ..Self::default()
        }
    }

    fn live(&self, id: Id) -> bool {
        self.spans.get(&id).is_some_and(|s| s.live)
    }

    fn pick_issued(&self, pick: Index) -> Option<Id> {
        (!self.issued.is_empty()).then(|| *pick.get(&self.issued))
    }

    /// R6: the topmost non-duplicate entry.
    fn current(&self, ctx: usize) -> Option<Id> {
        self.stacks[ctx]
            .iter()
            .rev()
            .find(|(_, dup)| !dup)
            .map(|&(id, _)| id)
    }

    /// R2: a new span with count 1, holding a reference on its parent.
    fn create(&mut self, id: Id, name: &str, parent: Option<Id>) {
        if let Some(p) = parent {
            self.spans.get_mut(&p).expect("parent").refs += 1;
        }
        self.spans.insert(
            id,
            ModelSpan {
                name: name.to_owned(),
                parent,
                refs: 1,
                live: true,
                n: None,
            },
        );
        self.issued.push(id);
        self.handles.push(id);
    }

    /// R4: releases one reference; at zero the span closes and releases its
    /// parent, and so on. Returns whether `id` itself closed.
    fn release(&mut self, id: Id) -> bool {
        let mut next = Some(id);
        let mut first = true;
        let mut closed_first = false;
        while let Some(at) = next.take() {
            let span = self
                .spans
                .get_mut(&at)
                .expect("released a span never issued");
            assert!(span.live, "model released a closed span");
            span.refs -= 1;
            if span.refs == 0 {
                span.live = false;
                self.closed.push(at);
                next = span.parent;
                closed_first |= first;
            }
            first = false;
        }
        closed_first
    }

    /// R9's right-hand side for every live span, computed from scratch:
    /// handles + live children + non-duplicate stack entries.
    fn r9_counts(&self) -> HashMap<Id, usize> {
        let mut counts: HashMap<Id, usize> = HashMap::new();
        for &h in &self.handles {
            *counts.entry(h).or_default() += 1;
        }
        for span in self.spans.values().filter(|s| s.live) {
            if let Some(p) = span.parent {
                *counts.entry(p).or_default() += 1;
            }
        }
        for &(id, duplicate) in self.stacks.iter().flatten() {
            if !duplicate {
                *counts.entry(id).or_default() += 1;
            }
        }
        counts
    }

    fn live_count(&self) -> usize {
        self.spans.values().filter(|s| s.live).count()
    }
}

/// The system under test: a registry and the stacks of its contexts.
struct System {
    registry: Registry<Recorder>,
    stacks: Vec<SpanStack>,
}

impl System {
    fn new() -> Self {
        Self {
            registry: Recorder::registry(),
            stacks: vec![SpanStack::default(); CONTEXTS],
        }
    }

    /// Enters `id` in context `ctx` as the bindings do: the first entry
    /// takes a reference; an ID that is not live is an error and leaves the
    /// stack as it was.
    fn enter(&mut self, ctx: usize, id: Id) -> Result<(), Error> {
        if self.registry.get(id).is_none() {
            return Err(Error::NotLive {
                id: id.into_u64(),
                op: Op::Enter,
            });
        }
        if self.stacks[ctx].push(id) {
            if let Err(e) = self.registry.clone_span(id) {
                self.stacks[ctx].pop(id);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Exits `id` in context `ctx`: the entry that held a reference releases
    /// it. Returns what `try_close` returned, if it was called.
    fn exit(&mut self, ctx: usize, id: Id) -> Option<bool> {
        self.stacks[ctx].pop(id).then(|| {
            self.registry
                .try_close(id)
                .expect("a stack entry's reference")
        })
    }
}

fn new_span(system: &System, name: &str, parent: Parent) -> Result<Id, Error> {
    system
        .registry
        .new_span(&attrs(name), parent, |fields, ()| {
            fields.push(("created".into(), Value::Bool(true)));
        })
}

/// Applies `action` to both sides, checking each result.
#[allow(clippy::too_many_lines)]
fn step(model: &mut Model, system: &mut System, action: &Action) -> Result<(), TestCaseError> {
    match *action {
        Action::NewRoot => {
            let id = new_span(system, "root", Parent::Root).expect("new root");
            check_fresh(model, id)?;
            model.create(id, "root", None);
        }
        Action::NewInContext { ctx } => {
            let current = system.stacks[ctx].current();
            prop_assert_eq!(current, model.current(ctx));
            let id = new_span(system, "contextual", Parent::Contextual(current)).expect("new");
            check_fresh(model, id)?;
            model.create(id, "contextual", current);
        }
        Action::NewContextualStale { pick } => {
            let Some(p) = model.pick_issued(pick) else {
                return Ok(());
            };
            let id = new_span(system, "stale-context", Parent::Contextual(Some(p))).expect("new");
            check_fresh(model, id)?;
            // R2: a contextual parent that is no longer live makes a root.
            let parent = model.live(p).then_some(p);
            model.create(id, "stale-context", parent);
        }
        Action::NewExplicit { pick } => {
            let Some(p) = model.pick_issued(pick) else {
                return Ok(());
            };
            let made = new_span(system, "explicit", Parent::Explicit(p));
            if model.live(p) {
                let id = made.expect("an explicit live parent");
                check_fresh(model, id)?;
                model.create(id, "explicit", Some(p));
            } else {
                // R2: nothing is created, no count changes.
                prop_assert_eq!(
                    made,
                    Err(Error::NotLive {
                        id: p.into_u64(),
                        op: Op::Parent
                    })
                );
            }
        }
        Action::Clone { pick } => {
            let Some(id) = model.pick_issued(pick) else {
                return Ok(());
            };
            let cloned = system.registry.clone_span(id);
            if model.live(id) {
                prop_assert_eq!(cloned, Ok(id));
                model.spans.get_mut(&id).unwrap().refs += 1;
                model.handles.push(id);
            } else {
                prop_assert_eq!(
                    cloned,
                    Err(Error::NotLive {
                        id: id.into_u64(),
                        op: Op::Clone
                    })
                );
            }
        }
        Action::Close { pick } => {
            if model.handles.is_empty() {
                return Ok(());
            }
            let id = model.handles.swap_remove(pick.index(model.handles.len()));
            let closed = system.registry.try_close(id);
            prop_assert_eq!(closed, Ok(model.release(id)));
        }
        Action::CloseNotLive { pick, raw } => {
            let dead: Vec<Id> = model
                .issued
                .iter()
                .copied()
                .filter(|&id| !model.live(id))
                .collect();
            let id = if dead.is_empty() {
                match Id::from_u64(raw) {
                    Ok(id) if !model.live(id) => id,
                    _ => return Ok(()),
                }
            } else {
                *pick.get(&dead)
            };
            prop_assert_eq!(
                system.registry.try_close(id),
                Err(Error::NotLive {
                    id: id.into_u64(),
                    op: Op::Close
                })
            );
        }
        Action::Enter { ctx, pick } => {
            let Some(id) = model.pick_issued(pick) else {
                return Ok(());
            };
            let entered = system.enter(ctx, id);
            if model.live(id) {
                prop_assert!(entered.is_ok(), "enter {:?}: {:?}", id, entered);
                let duplicate = model.stacks[ctx].iter().any(|&(e, _)| e == id);
                model.stacks[ctx].push((id, duplicate));
                if !duplicate {
                    model.spans.get_mut(&id).unwrap().refs += 1;
                }
            } else {
                prop_assert!(entered.is_err(), "entered {:?}, which is not live", id);
            }
        }
        Action::Exit {
            ctx,
            pick,
            from_stack,
        } => {
            let id = if from_stack && !model.stacks[ctx].is_empty() {
                pick.get(&model.stacks[ctx]).0
            } else if let Some(id) = model.pick_issued(pick) {
                id
            } else {
                return Ok(());
            };
            let released = system.exit(ctx, id);
            // R5: the most recent entry of `id` goes, wherever it is.
            let expected = match model.stacks[ctx].iter().rposition(|&(e, _)| e == id) {
                Some(at) => {
                    let (_, duplicate) = model.stacks[ctx].remove(at);
                    (!duplicate).then(|| model.release(id))
                }
                None => None,
            };
            prop_assert_eq!(released, expected, "exit {:?} in context {}", id, ctx);
        }
        Action::Record { pick, value } => {
            let Some(id) = model.pick_issued(pick) else {
                return Ok(());
            };
            let recorded = system.registry.record(id, [("n", Value::I64(value))]);
            if model.live(id) {
                prop_assert_eq!(recorded, Ok(()));
                model.spans.get_mut(&id).unwrap().n = Some(value);
            } else {
                prop_assert_eq!(
                    recorded,
                    Err(Error::NotLive {
                        id: id.into_u64(),
                        op: Op::Record
                    })
                );
            }
        }
        Action::Lookup { raw } => {
            if let Ok(id) = Id::from_u64(raw) {
                prop_assert_eq!(system.registry.get(id).is_some(), model.live(id));
            }
        }
    }
    Ok(())
}

/// R1: a new span's ID is not zero and was never issued before (fewer than
/// `GENERATIONS` spans are created per case, so no ID may recur).
fn check_fresh(model: &Model, id: Id) -> Result<(), TestCaseError> {
    prop_assert_ne!(id.into_u64(), 0);
    prop_assert!(!model.spans.contains_key(&id), "{:?} was issued twice", id);
    Ok(())
}

/// Compares every observable of the registry with the model.
fn check(model: &Model, system: &System) -> Result<(), TestCaseError> {
    let registry = &system.registry;
    let r9 = model.r9_counts();
    prop_assert_eq!(registry.len(), model.live_count(), "len()");
    prop_assert_eq!(registry.is_empty(), model.live_count() == 0);
    for &id in &model.issued {
        let span = &model.spans[&id];
        let view = registry.get(id);
        prop_assert_eq!(view.is_some(), span.live, "liveness of {:?}", id);
        if !span.live {
            prop_assert_eq!(registry.ref_count(id), 0);
            prop_assert!(
                !r9.contains_key(&id),
                "something still holds closed {:?}",
                id
            );
            continue;
        }
        let view = view.unwrap();
        prop_assert_eq!(view.name(), span.name.as_str());
        prop_assert_eq!(view.parent_id(), span.parent, "parent of {:?}", id);
        // R9, both as the model counted and from its formula.
        prop_assert_eq!(Some(&span.refs), r9.get(&id), "model's own R9 for {:?}", id);
        prop_assert_eq!(registry.ref_count(id), span.refs, "ref_count of {:?}", id);
        prop_assert_eq!(view.ref_count(), span.refs);
        // R8: the scope follows the parents to the root.
        let scope: Vec<Id> = view.scope().map(|s| s.id()).collect();
        let mut expected = vec![id];
        while let Some(p) = model.spans[expected.last().unwrap()].parent {
            prop_assert!(model.live(p), "a live span's parent {:?} is live", p);
            expected.push(p);
        }
        prop_assert_eq!(&scope, &expected, "scope of {:?}", id);
        let from_root: Vec<Id> = view.scope().from_root().map(|s| s.id()).collect();
        expected.reverse();
        prop_assert_eq!(from_root, expected);
        let mut want = vec![("created".to_owned(), Value::Bool(true))];
        if let Some(n) = span.n {
            want.push(("n".to_owned(), Value::I64(n)));
        }
        prop_assert_eq!(fields(registry, id), Some(want));
    }
    for ctx in 0..CONTEXTS {
        prop_assert_eq!(
            system.stacks[ctx].current(),
            model.current(ctx),
            "current span of context {}",
            ctx
        );
        prop_assert_eq!(system.stacks[ctx].is_empty(), model.stacks[ctx].is_empty());
    }
    // Only the closes since the last check: the earlier ones were checked.
    let closes = registry.hooks().closed();
    prop_assert!(closes.len() >= model.checked_closes.get());
    let new = &closes[model.checked_closes.get()..];
    prop_assert_eq!(
        new.iter().map(|c| c.id).collect::<Vec<_>>(),
        &model.closed[model.checked_closes.get()..],
        "close order"
    );
    for close in new {
        let span = &model.spans[&close.id];
        // R4: on_close saw the span whole, still readable, its parent live,
        // and could neither revive nor close it again.
        prop_assert_eq!(&close.name, &span.name);
        prop_assert_eq!(close.parent, span.parent);
        prop_assert_eq!(close.ref_count, 0);
        prop_assert_eq!(close.name_via_get.as_deref(), Some(span.name.as_str()));
        prop_assert!(close.parent_ref_count.is_none_or(|n| n >= 1));
        prop_assert!(!close.revived && !close.reclosed, "{:?}", close);
    }
    model.checked_closes.set(closes.len());
    Ok(())
}

/// Releases every stack entry and handle, in an order the case chose.
fn release_all(
    model: &mut Model,
    system: &mut System,
    order: &[Index],
) -> Result<(), TestCaseError> {
    let mut order = order.iter().cycle();
    for ctx in 0..CONTEXTS {
        while !model.stacks[ctx].is_empty() {
            step(
                model,
                system,
                &Action::Exit {
                    ctx,
                    pick: *order.next().unwrap(),
                    from_stack: true,
                },
            )?;
            check(model, system)?;
        }
    }
    while !model.handles.is_empty() {
        step(
            model,
            system,
            &Action::Close {
                pick: *order.next().unwrap(),
            },
        )?;
        check(model, system)?;
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES sets the number of cases (256 by default).
    #![proptest_config(ProptestConfig {
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn r2_to_r9_hold_after_every_step(
        actions in prop::collection::vec(action(), 1..200),
        order in prop::collection::vec(any::<Index>(), 1..16),
    ) {
        let mut model = Model::new();
        let mut system = System::new();
        for action in &actions {
            step(&mut model, &mut system, action)?;
            check(&model, &system)?;
        }
        release_all(&mut model, &mut system, &order)?;
        check(&model, &system)?;
        prop_assert_eq!(system.registry.len(), 0, "R9: nothing held, nothing live");
        prop_assert!(model.spans.values().all(|s| !s.live));
        prop_assert_eq!(model.closed.len(), model.issued.len(), "every span closed once");
    }
}
