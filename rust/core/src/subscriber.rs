//! `tracing_core::Subscriber` for [`Registry`], so Rust code using the
//! `tracing` macros drives the same registry as Python.
//!
//! Contexts here are threads: each thread has its own [`SpanStack`] per
//! registry. When a thread ends, the references its stacks hold are released
//! (nothing leaks and no later thread inherits them). Exiting releases through
//! this registry directly, never through the global dispatcher.

use std::cell::RefCell;

use sharded_slab::Config;
use tracing_core::span::{Attributes, Current, Id as TracingId, Record};
use tracing_core::subscriber::{Interest, Subscriber};
use tracing_core::{Event, Metadata};

use crate::field::Collector;
use crate::{Attrs, Hooks, Id, Parent, Registry, SpanStack};

/// One thread's stack for one registry. Dropping it (at thread exit) releases
/// the references its entries hold.
trait ThreadStack {
    fn registry_uid(&self) -> usize;
    fn stack(&mut self) -> &mut SpanStack;
}

struct Local<H: Hooks, C: Config + 'static> {
    registry: Registry<H, C>,
    stack: SpanStack,
}

impl<H: Hooks, C: Config + 'static> ThreadStack for Local<H, C> {
    fn registry_uid(&self) -> usize {
        self.registry.uid()
    }
    fn stack(&mut self) -> &mut SpanStack {
        &mut self.stack
    }
}

impl<H: Hooks, C: Config + 'static> Drop for Local<H, C> {
    fn drop(&mut self) {
        for id in self.stack.drain_held() {
            self.registry.release(id);
        }
    }
}

thread_local! {
    static STACKS: RefCell<Vec<Box<dyn ThreadStack>>> = const { RefCell::new(Vec::new()) };
}

impl<H: Hooks, C: Config + 'static> Registry<H, C> {
    /// Runs `f` on this thread's stack for this registry. `None` while the
    /// thread is being torn down.
    fn with_stack<R>(&self, f: impl FnOnce(&mut SpanStack) -> R) -> Option<R> {
        STACKS
            .try_with(|stacks| {
                let mut stacks = stacks.borrow_mut();
                let uid = self.uid();
                let at = if let Some(at) = stacks.iter().position(|s| s.registry_uid() == uid) {
                    at
                } else {
                    stacks.push(Box::new(Local {
                        registry: self.clone(),
                        stack: SpanStack::default(),
                    }));
                    stacks.len() - 1
                };
                f(stacks[at].stack())
            })
            .ok()
    }

    /// The current span of this thread, as the `Subscriber` impl sees it.
    #[must_use]
    pub fn thread_current(&self) -> Option<Id> {
        self.with_stack(|s| s.current()).flatten()
    }
}

impl<H: Hooks, C: Config + Send + Sync + 'static> Subscriber for Registry<H, C> {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> TracingId {
        let meta = attrs.metadata();
        let parent = if attrs.is_root() {
            Parent::Root
        } else if let Some(p) = attrs.parent() {
            Parent::Explicit(p.into())
        } else {
            Parent::Contextual(self.thread_current())
        };
        let span = Attrs {
            name: meta.name(),
            target: meta.target(),
            level: (*meta.level()).into(),
            metadata: Some(meta),
            trace_parent: None,
            remote_parent: None,
            foreign_parent: None,
        };
        let id = self
            .new_span(&span, parent, |fields, _| {
                attrs.record(&mut Collector(fields));
            })
            .unwrap_or_else(|e| panic!("tracing span {:?}: {e}", meta.name()));
        id.into()
    }

    fn record(&self, span: &TracingId, values: &Record<'_>) {
        if let Ok(data) = self.live_slot(span.into(), crate::Op::Record) {
            values.record(&mut Collector(&mut data.lock_fields()));
        }
    }

    fn record_follows_from(&self, _: &TracingId, _: &TracingId) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &TracingId) {
        let id = Id::from(span);
        // A duplicate entry needs no check: this stack holds a reference, so
        // the span is live. A first entry takes a reference, which fails if
        // the span is not live: then the push is undone (nothing else can
        // have seen this thread's stack in between).
        if self.with_stack(|s| s.push(id)) == Some(true) && self.clone_span(id).is_err() {
            self.with_stack(|s| s.pop(id));
        }
    }

    fn exit(&self, span: &TracingId) {
        let id = Id::from(span);
        if self.with_stack(|s| s.pop(id)) == Some(true) {
            self.release(id);
        }
    }

    fn clone_span(&self, span: &TracingId) -> TracingId {
        match Registry::clone_span(self, span.into()) {
            Ok(_) => span.clone(),
            Err(e) => panic!("{e}"),
        }
    }

    fn try_close(&self, span: TracingId) -> bool {
        Registry::try_close(self, (&span).into()).unwrap_or(false)
    }

    fn current_span(&self) -> Current {
        match self
            .thread_current()
            .and_then(|id| Some((id, self.get(id)?.metadata()?)))
        {
            Some((id, meta)) => Current::new(id.into(), meta),
            None => Current::none(),
        }
    }
}
