//! A per-thread stack of entered spans, for the `Subscriber` impl.

use crate::Id;

/// The spans entered in one context, innermost last.
///
/// An entry is a *duplicate* when the same span is already on the stack
/// below it; duplicates hold no reference and are never current.
#[derive(Debug, Default, Clone)]
pub struct SpanStack {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Id,
    duplicate: bool,
}

impl SpanStack {
    /// R5: pushes `id`; returns `true` if this is its first (non-duplicate)
    /// entry, which must take a reference.
    pub fn push(&mut self, id: Id) -> bool {
        let duplicate = self.entries.iter().any(|e| e.id == id);
        self.entries.push(Entry { id, duplicate });
        !duplicate
    }

    /// R5: removes the most recent entry of `id`, wherever it is. Returns `true`
    /// if that was the non-duplicate entry, whose reference must be released;
    /// `false` if it was a duplicate or `id` was not on the stack.
    pub fn pop(&mut self, id: Id) -> bool {
        match self.entries.iter().rposition(|e| e.id == id) {
            Some(at) => !self.entries.remove(at).duplicate,
            None => false,
        }
    }

    /// R6: the topmost non-duplicate entry.
    #[must_use]
    pub fn current(&self) -> Option<Id> {
        self.entries
            .iter()
            .rev()
            .find(|e| !e.duplicate)
            .map(|e| e.id)
    }

    /// R11: removes every entry (the context ended); returns the IDs whose
    /// references were held.
    pub fn drain_held(&mut self) -> impl Iterator<Item = Id> + '_ {
        self.entries
            .drain(..)
            .filter(|e| !e.duplicate)
            .map(|e| e.id)
    }

    /// Whether nothing is entered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Id {
        Id::from_u64(n).unwrap()
    }

    #[test]
    fn r6_duplicate_entry_is_never_current() {
        let mut s = SpanStack::default();
        assert!(s.push(id(1)));
        assert!(s.push(id(2)));
        assert!(!s.push(id(1)), "re-entering root is a duplicate");
        assert_eq!(s.current(), Some(id(2)));
        assert!(
            !s.pop(id(1)),
            "the most recent entry, the duplicate, goes first"
        );
        assert!(
            s.pop(id(1)),
            "then the first entry, which held the reference"
        );
        assert_eq!(s.current(), Some(id(2)));
    }

    #[test]
    fn r5_exit_out_of_order_and_unknown() {
        let mut s = SpanStack::default();
        s.push(id(1));
        s.push(id(2));
        s.push(id(3));
        assert!(s.pop(id(2)), "removes an entry that is not on top");
        assert_eq!(s.current(), Some(id(3)));
        assert!(!s.pop(id(9)), "exiting a span not entered changes nothing");
        assert_eq!(s.drain_held().collect::<Vec<_>>(), vec![id(1), id(3)]);
        assert!(s.is_empty());
    }
}
