//! Busy intervals on tracks, as pictures need them: what the Chrome trace
//! and the flame graph are drawn from.
//!
//! A *track* is a thread, or an asyncio task, where spans are entered. Each
//! enter opens an interval on the track it happens in; its exit closes it.
//! The guarantee that matters (Perfetto rejects anything else): **the
//! intervals a [`Timeline`] closes on one track always nest**: any two are
//! disjoint or one contains the other. Programs do not always exit in
//! order (a generator closed from elsewhere, `exit(id)` of an entry that is
//! not on top, R5), so an exit below the top closes the intervals above it
//! at the same instant and opens them again just after: one busy stretch
//! drawn as two slices, never an overlap. Times on a track never go
//! backwards either: a reading earlier than the last one seen there counts
//! as that one.
//!
//! Each closed interval also carries its *self* time: its length less that
//! of the intervals closed directly inside it on the same track (never
//! below 0). Intervals on other tracks run concurrently and are never
//! subtracted, so summed self times count no instant of a track twice.

use std::collections::HashMap;

/// Per-track stacks of open intervals, each with a payload `P` (what the
/// picture draws: a name, a path).
#[derive(Debug)]
pub struct Timeline<P> {
    tracks: HashMap<u32, Track<P>>,
    /// The latest time of the tracks that went idle and were dropped: a
    /// track starts no earlier (tracks come and go with threads and tasks,
    /// so idle ones are not kept; a reading from a late clock on a track
    /// used again must not start before its last slice ended).
    floor: u64,
}

#[derive(Debug)]
struct Track<P> {
    open: Vec<Open<P>>,
    /// The latest time seen on the track.
    last: u64,
}

#[derive(Debug)]
struct Open<P> {
    key: u64,
    start: u64,
    /// Length of the intervals closed directly inside this one.
    children: u64,
    payload: P,
}

/// An interval as it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed<'a, P> {
    /// The track it ran on.
    pub track: u32,
    /// The key it was entered with (a span's identity).
    pub key: u64,
    /// Start, in the caller's time unit.
    pub start: u64,
    /// End; never before `start`.
    pub end: u64,
    /// `end - start` less the intervals closed directly inside it on this
    /// track, never below 0.
    pub self_time: u64,
    /// How many intervals were open below it on its track.
    pub depth: usize,
    /// What it was entered with.
    pub payload: &'a P,
}

impl<P> Default for Timeline<P> {
    fn default() -> Self {
        Timeline {
            tracks: HashMap::new(),
            floor: 0,
        }
    }
}

impl<P> Timeline<P> {
    /// An empty timeline.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens an interval of `key` on `track` at `at`; returns the start
    /// used (`at`, or the track's latest time if `at` is earlier).
    pub fn enter(&mut self, track: u32, key: u64, at: u64, payload: P) -> u64 {
        let floor = self.floor;
        let t = self.tracks.entry(track).or_insert_with(|| Track {
            open: Vec::new(),
            last: floor,
        });
        t.last = t.last.max(at);
        t.open.push(Open {
            key,
            start: t.last,
            children: 0,
            payload,
        });
        t.last
    }

    /// The start of the innermost open interval of `key` on `track`.
    #[must_use]
    pub fn open_start(&self, track: u32, key: u64) -> Option<u64> {
        let t = self.tracks.get(&track)?;
        t.open.iter().rev().find(|o| o.key == key).map(|o| o.start)
    }

    /// How many intervals are open on `track`.
    #[must_use]
    pub fn depth(&self, track: u32) -> usize {
        self.tracks.get(&track).map_or(0, |t| t.open.len())
    }

    /// Whether no interval is open on any track.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.tracks.values().all(|t| t.open.is_empty())
    }

    /// Closes the innermost open interval of `key` on `track` at `at`,
    /// handing each interval it closes to `emit` (those above it first,
    /// which open again at the same instant). Whether there was one.
    pub fn exit(
        &mut self,
        track: u32,
        key: u64,
        at: u64,
        mut emit: impl FnMut(Closed<'_, P>),
    ) -> bool {
        let Some(t) = self.tracks.get_mut(&track) else {
            return false;
        };
        let Some(at_index) = t.open.iter().rposition(|o| o.key == key) else {
            return false;
        };
        t.last = t.last.max(at);
        let now = t.last;
        let mut above = Vec::new();
        while t.open.len() > at_index + 1 {
            let o = pop(t, track, now, &mut emit);
            above.push((o.key, o.payload));
        }
        pop(t, track, now, &mut emit);
        for (key, payload) in above.into_iter().rev() {
            t.open.push(Open {
                key,
                start: now,
                children: 0,
                payload,
            });
        }
        if t.open.is_empty() {
            self.floor = self.floor.max(now);
            self.tracks.remove(&track);
        }
        true
    }

    /// Closes every open interval at `at` (the picture is finished), inner
    /// ones first.
    pub fn close_all(&mut self, at: u64, mut emit: impl FnMut(Closed<'_, P>)) {
        let mut tracks: Vec<u32> = self.tracks.keys().copied().collect();
        tracks.sort_unstable();
        for track in tracks {
            if let Some(mut t) = self.tracks.remove(&track) {
                t.last = t.last.max(at);
                let now = t.last;
                while !t.open.is_empty() {
                    pop(&mut t, track, now, &mut emit);
                }
                self.floor = self.floor.max(now);
            }
        }
    }
}

/// Closes the top interval of `t` at `now`, hands it to `emit`, and counts
/// its length as a child of the one below.
fn pop<P>(t: &mut Track<P>, track: u32, now: u64, emit: &mut impl FnMut(Closed<'_, P>)) -> Open<P> {
    let o = t.open.pop().expect("the caller checked the stack's length");
    let len = now - o.start;
    emit(Closed {
        track,
        key: o.key,
        start: o.start,
        end: now,
        self_time: len.saturating_sub(o.children),
        depth: t.open.len(),
        payload: &o.payload,
    });
    if let Some(below) = t.open.last_mut() {
        below.children += len;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Enter { track: u32, key: u64 },
        Exit { track: u32, key: u64 },
        Tick(u64),
        Late(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u32, 0..6u64).prop_map(|(track, key)| Op::Enter { track, key }),
            (0..3u32, 0..6u64).prop_map(|(track, key)| Op::Exit { track, key }),
            (0..50u64).prop_map(Op::Tick),
            (0..50u64).prop_map(Op::Late),
        ]
    }

    type Emitted = Vec<(u32, u64, u64, u64, u64)>;

    fn run(ops: &[Op], close: bool) -> Emitted {
        let mut tl: Timeline<u64> = Timeline::new();
        let mut now = 0u64;
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Enter { track, key } => {
                    tl.enter(track, key, now, key);
                }
                Op::Exit { track, key } => {
                    tl.exit(track, key, now, |c| {
                        assert_eq!(*c.payload, c.key);
                        out.push((c.track, c.key, c.start, c.end, c.self_time));
                    });
                }
                Op::Tick(d) => now += d,
                // A reading from another thread's clock, a little behind.
                Op::Late(d) => now = now.saturating_sub(d),
            }
        }
        if close {
            tl.close_all(now, |c| {
                out.push((c.track, c.key, c.start, c.end, c.self_time));
            });
            assert!(tl.is_idle());
        }
        out
    }

    /// The measure of the union of intervals.
    fn covered(mut iv: Vec<(u64, u64)>) -> u64 {
        iv.sort_unstable();
        let (mut total, mut reach) = (0, 0);
        for (s, e) in iv {
            if e > reach {
                total += e - s.max(reach);
                reach = e;
            }
        }
        total
    }

    proptest! {
        /// Perfetto's rule: on one track, closed intervals nest.
        #[test]
        fn intervals_on_a_track_nest(ops in prop::collection::vec(op(), 0..200), close: bool) {
            let out = run(&ops, close);
            for (i, a) in out.iter().enumerate() {
                prop_assert!(a.2 <= a.3, "start after end: {a:?}");
                for b in &out[i + 1..] {
                    if a.0 != b.0 {
                        continue;
                    }
                    let disjoint = a.3 <= b.2 || b.3 <= a.2;
                    let a_in_b = b.2 <= a.2 && a.3 <= b.3;
                    let b_in_a = a.2 <= b.2 && b.3 <= a.3;
                    prop_assert!(disjoint || a_in_b || b_in_a, "overlap on a track: {a:?} {b:?}");
                }
            }
        }

        /// Self times on a track add up to the time the track was busy:
        /// nothing counted twice, nothing lost.
        #[test]
        fn self_times_cover_the_busy_time(ops in prop::collection::vec(op(), 0..200)) {
            let out = run(&ops, true);
            for track in 0..3 {
                let mine: Vec<_> = out.iter().filter(|c| c.0 == track).collect();
                let selfs: u64 = mine.iter().map(|c| c.4).sum();
                let busy = covered(mine.iter().map(|c| (c.2, c.3)).collect());
                prop_assert_eq!(selfs, busy);
            }
        }

        /// An interval is closed only by an exit of its own key on its own
        /// track, and every enter is closed once in the end (splits aside,
        /// the number of slices per key is at least its enters).
        #[test]
        fn every_enter_is_drawn(ops in prop::collection::vec(op(), 0..200)) {
            let out = run(&ops, true);
            for track in 0..3 {
                for key in 0..6 {
                    let enters = ops.iter().filter(|o| matches!(o, Op::Enter { track: t, key: k } if *t == track && *k == key)).count();
                    let drawn = out.iter().filter(|c| c.0 == track && c.1 == key).count();
                    prop_assert!(drawn >= enters);
                }
            }
        }
    }

    #[test]
    fn an_exit_below_the_top_splits_the_intervals_above() {
        let mut tl = Timeline::new();
        tl.enter(1, 10, 0, "gen");
        tl.enter(1, 20, 5, "caller");
        let mut out = Vec::new();
        tl.exit(1, 10, 8, |c| {
            out.push((*c.payload, c.start, c.end, c.self_time));
        });
        assert_eq!(out, [("caller", 5, 8, 3), ("gen", 0, 8, 5)]);
        out.clear();
        tl.exit(1, 20, 12, |c| {
            out.push((*c.payload, c.start, c.end, c.self_time));
        });
        assert_eq!(out, [("caller", 8, 12, 4)]);
        assert!(!tl.exit(1, 20, 13, |_| panic!("nothing open")));
    }

    #[test]
    fn children_on_another_track_are_not_subtracted() {
        let mut tl = Timeline::new();
        tl.enter(1, 1, 0, ());
        tl.enter(2, 2, 10, ());
        let mut selfs = Vec::new();
        tl.exit(2, 2, 60, |c| selfs.push((c.key, c.self_time)));
        tl.enter(1, 3, 70, ());
        tl.exit(1, 3, 80, |c| selfs.push((c.key, c.self_time)));
        tl.exit(1, 1, 100, |c| selfs.push((c.key, c.self_time)));
        assert_eq!(selfs, [(2, 50), (3, 10), (1, 90)]);
    }
}
