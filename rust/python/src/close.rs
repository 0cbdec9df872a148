//! The end of a span's life, as layers see it: R14's end (sinks write the
//! span, `on_end` sees it) and its close with the last reference
//! (`on_close`). The core calls [`Hooks::on_close`]; a handle that made its
//! span calls [`ended`] as it is released.

use pykregistry_core::{Config, Hooks, Id, Registry, SpanData};
use pyo3::prelude::*;

use crate::ext::SpanExt;
use crate::layers::{Core, Layers, Step};
use crate::span_ref::SpanRef;

/// R14: what follows a span's end (its `SpanExt::end`): sinks write it,
/// layers' `on_end` see it.
pub(crate) fn ended(py: Python<'_>, core: &Core, id: Id, span: &SpanData<SpanExt>) {
    let layers = core.hooks();
    layers.write_span(core, id, span);
    layers.dispatch(py, Step::End, || {
        Ok((Bound::new(py, SpanRef::new(core.clone(), id))?,))
    });
}

impl Hooks for Layers {
    type Ext = SpanExt;

    fn on_close<C: Config + 'static>(
        &self,
        _registry: &Registry<Self, C>,
        id: Id,
        span: &SpanData<SpanExt>,
    ) {
        self.live().remove(span.ext().live_at);
        let ending = span.ext().end();
        if !ending && !self.hooks(Step::Close) {
            return;
        }
        // `_registry` is that one, as the core's generic code sees it.
        let Some(core) = self.registry() else {
            return;
        };
        Python::attach(|py| {
            if ending {
                // No handle made it (or none ended it): it ends as it closes.
                ended(py, &core, id, span);
            }
            self.dispatch(py, Step::Close, || {
                Ok((Bound::new(py, SpanRef::new(core.clone(), id))?,))
            });
        });
    }
}
