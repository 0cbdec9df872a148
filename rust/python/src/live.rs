//! The open spans of a registry, for what must reach them all (R15): the
//! garbage collector and the interpreter's exit (see `registries`).

use pykregistry_core::Id;

use crate::gil::GilCell;

/// A span's place in [`Live`]: none.
pub(crate) const NOWHERE: u32 = u32::MAX;

/// The open spans of one registry, one reusable place each: a span takes a
/// place when it is made and gives it back when it closes, in O(1).
pub(crate) struct Live(GilCell<Places>);

#[derive(Default)]
struct Places {
    ids: Vec<Option<Id>>,
    free: Vec<u32>,
}

impl Default for Live {
    fn default() -> Self {
        Live(GilCell::new(Places::default()))
    }
}

impl Live {
    /// A place for a span being made; [`Live::fill`] names it once made.
    pub(crate) fn reserve(&self) -> u32 {
        let Ok(mut places) = self.0 .0.try_borrow_mut() else {
            return NOWHERE;
        };
        if let Some(at) = places.free.pop() {
            return at;
        }
        match u32::try_from(places.ids.len()) {
            Ok(at) if at != NOWHERE => {
                places.ids.push(None);
                at
            }
            _ => NOWHERE,
        }
    }

    pub(crate) fn fill(&self, at: u32, id: Id) {
        if let Ok(mut places) = self.0 .0.try_borrow_mut() {
            if let Some(place) = places.ids.get_mut(at as usize) {
                *place = Some(id);
            }
        }
    }

    /// The span at `at` closed.
    pub(crate) fn remove(&self, at: u32) {
        if let Ok(mut places) = self.0 .0.try_borrow_mut() {
            if places
                .ids
                .get_mut(at as usize)
                .and_then(Option::take)
                .is_some()
            {
                places.free.push(at);
            }
        }
    }

    /// The span `at` was reserved for was not made (rare: an error).
    pub(crate) fn unreserve(&self, at: u32) {
        if let Ok(mut places) = self.0 .0.try_borrow_mut() {
            let reserved = places.ids.get(at as usize).is_some_and(Option::is_none);
            if reserved && !places.free.contains(&at) {
                places.free.push(at);
            }
        }
    }

    /// The open spans, in no order.
    pub(crate) fn ids(&self) -> Vec<Id> {
        self.0
             .0
            .try_borrow()
            .map(|places| places.ids.iter().flatten().copied().collect())
            .unwrap_or_default()
    }
}
