//! What the JSON-lines-to-Chrome conversion remembers per thread or task
//! and per parent, each table capped so that memory stays bounded however
//! many threads, tasks and spans a file holds.
//!
//! - [`Tracks`]: the tracks (`tid`s) of the threads and tasks seen, with
//!   the slices that may still enclose a later one, least recently used
//!   forgotten past a number of tracks or of slices. A track forgotten and
//!   used again gets a new `tid`, named anew with the same name: a `tid`
//!   is never given to two tracks, and each is named before its first
//!   event, so the document stays valid and each track nests.
//! - [`PendingArrows`]: per parent not yet read, the tracks its children
//!   were on (for the flow arrows drawn when it arrives), the parents whose
//!   children came first forgotten past a number of entries.

use std::collections::{HashMap, VecDeque};

/// Spans of one track whose extents cross (possible for spans not made by
/// `with` blocks) go to extra lanes, drawn as tracks of their own, so that
/// each lane nests; at most this many lanes per track (later ones share
/// the last).
const LANES: usize = 8;
/// Slices remembered per lane to check the next against: older ones are
/// forgotten (a crossing with a forgotten slice goes unnoticed).
const LANE_MEMORY: usize = 4096;
/// Tracks remembered (see [`Tracks`]).
pub const MAX_TRACKS: usize = 4096;
/// Slices remembered, over all tracks (16 bytes each).
pub const MAX_SLICES: usize = 1 << 18;
/// Child tracks remembered for arrows, over all parents.
pub const MAX_ARROWS: usize = 1 << 16;
/// Child tracks remembered for arrows per parent: children on more tracks
/// than this get no arrow.
pub const MAX_ARROWS_PER_PARENT: usize = 1024;

/// A thread, or an asyncio task in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackKey {
    /// `threading.get_ident()`.
    pub thread: Option<u64>,
    /// The task's name.
    pub task: Option<String>,
}

/// Where a slice or an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The lane's `tid`.
    pub tid: u32,
    /// The track's serial number: equal for the lanes of one track while
    /// it is remembered, never given to another.
    pub serial: u64,
    /// The name to give `tid` (an `M` event) before its first event: set
    /// the first time it is used.
    pub new_name: Option<String>,
}

#[derive(Debug)]
struct LaneTrack {
    name: String,
    serial: u64,
    used: u64,
    /// Per lane: its tid (0 until named) and the slices that may still
    /// enclose or cross a later one, ordered by end.
    lanes: Vec<(u32, VecDeque<(u64, u64)>)>,
}

/// The tracks of the threads and tasks seen (see the module's docs).
#[derive(Debug)]
pub struct Tracks {
    by_key: HashMap<TrackKey, LaneTrack>,
    next_tid: u32,
    next_serial: u64,
    clock: u64,
    slices: usize,
    track_cap: usize,
    slice_cap: usize,
    /// Slices per lane: [`LANE_MEMORY`], less if one track's lanes would
    /// hold more than `max_slices`.
    lane_memory: usize,
}

impl Tracks {
    /// No tracks; at most `max_tracks` tracks (at least 1) and
    /// `max_slices` slices (at least one per lane) remembered.
    #[must_use]
    pub fn new(max_tracks: usize, max_slices: usize) -> Self {
        let max_slices = max_slices.max(LANES);
        Tracks {
            by_key: HashMap::new(),
            next_tid: 1,
            next_serial: 1,
            clock: 0,
            slices: 0,
            track_cap: max_tracks.max(1),
            slice_cap: max_slices,
            lane_memory: (max_slices / LANES).clamp(1, LANE_MEMORY),
        }
    }

    /// How many tracks and slices are remembered.
    #[cfg(test)]
    #[must_use]
    pub fn remembered(&self) -> (usize, usize) {
        (self.by_key.len(), self.slices)
    }

    /// Lane 0 of track `key`: where an event goes.
    pub fn event(&mut self, key: &TrackKey) -> Placed {
        let placed = self.lane(key, 0);
        self.forget_old();
        placed
    }

    /// Where a span from `start` to `end` on track `key` goes: the first
    /// lane where it nests with the slices there.
    pub fn span(&mut self, key: &TrackKey, start: u64, end: u64) -> Placed {
        let lanes = self.by_key.get(key).map_or(0, |t| t.lanes.len());
        let mut chosen = LANES - 1;
        for lane in 0..LANES {
            if lane >= lanes {
                chosen = lane;
                break;
            }
            let slices = &mut self.by_key.get_mut(key).expect("counted above").lanes[lane].1;
            // Slices inside this one are covered by it from now on.
            while slices.back().is_some_and(|&(s, e)| s >= start && e <= end) {
                slices.pop_back();
                self.slices -= 1;
            }
            let crosses = slices
                .back()
                .is_some_and(|&(s, e)| e > start && s < start && e < end);
            if !crosses {
                chosen = lane;
                break;
            }
        }
        let placed = self.lane(key, chosen);
        let slices = &mut self.by_key.get_mut(key).expect("made above").lanes[chosen].1;
        slices.push_back((start, end));
        self.slices += 1;
        if slices.len() > self.lane_memory {
            slices.pop_front();
            self.slices -= 1;
        }
        self.forget_old();
        placed
    }

    /// Lane `lane` of track `key`, made and named on first use.
    fn lane(&mut self, key: &TrackKey, lane: usize) -> Placed {
        self.clock += 1;
        let track = self.by_key.entry(key.clone()).or_insert_with(|| {
            self.next_serial += 1;
            LaneTrack {
                name: match (&key.task, key.thread) {
                    (Some(task), _) => task.clone(),
                    (None, Some(thread)) => format!("Thread {thread}"),
                    (None, None) => "Thread ?".to_owned(),
                },
                serial: self.next_serial,
                used: 0,
                lanes: Vec::new(),
            }
        });
        track.used = self.clock;
        while track.lanes.len() <= lane {
            track.lanes.push((0, VecDeque::new()));
        }
        let mut new_name = None;
        if track.lanes[lane].0 == 0 {
            track.lanes[lane].0 = self.next_tid;
            self.next_tid = self.next_tid.saturating_add(1);
            new_name = Some(if lane == 0 {
                track.name.clone()
            } else {
                format!("{} (crossing spans {lane})", track.name)
            });
        }
        Placed {
            tid: track.lanes[lane].0,
            serial: track.serial,
            new_name,
        }
    }

    /// Past either cap, forgets the least recently used tracks down to
    /// three quarters of both (so that this runs rarely), never the track
    /// used last.
    fn forget_old(&mut self) {
        if self.by_key.len() <= self.track_cap && self.slices <= self.slice_cap {
            return;
        }
        let mut by_age: Vec<(u64, TrackKey)> = self
            .by_key
            .iter()
            .map(|(k, t)| (t.used, k.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(used, _)| *used);
        by_age.pop(); // the track used last stays
        let (tracks_to, slices_to) = (self.track_cap * 3 / 4, self.slice_cap * 3 / 4);
        for (_, key) in by_age {
            if self.by_key.len() <= tracks_to && self.slices <= slices_to {
                break;
            }
            if let Some(track) = self.by_key.remove(&key) {
                self.slices -= track.lanes.iter().map(|(_, s)| s.len()).sum::<usize>();
            }
        }
    }
}

// === PendingArrows ===

/// One child track of a parent: its serial, its tid, the earliest start of
/// a child there.
pub type ChildTrack = (u64, u32, u64);

/// Per parent not yet read (by span id): the tracks its children were on.
#[derive(Debug)]
pub struct PendingArrows {
    by_parent: HashMap<u64, (u64, Vec<ChildTrack>)>,
    /// Parents in the order their first child came, with the stamp of that
    /// entry (stale ones are skipped and compacted away).
    order: VecDeque<(u64, u64)>,
    stamp: u64,
    entries: usize,
    max_entries: usize,
    max_per_parent: usize,
}

impl PendingArrows {
    /// Nothing pending; at most `max_entries` child tracks in all and
    /// `max_per_parent` per parent.
    #[must_use]
    pub fn new(max_entries: usize, max_per_parent: usize) -> Self {
        PendingArrows {
            by_parent: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
            entries: 0,
            max_entries: max_entries.max(1),
            max_per_parent: max_per_parent.max(1),
        }
    }

    /// How many parents and child tracks are remembered.
    #[cfg(test)]
    #[must_use]
    pub fn remembered(&self) -> (usize, usize) {
        (self.by_parent.len(), self.entries)
    }

    /// A child of `parent` on track `serial` (lane `tid`) started at
    /// `start`: the arrow goes to the earliest child per track.
    pub fn note(&mut self, parent: u64, (serial, tid, start): ChildTrack) {
        let (stamp, order) = (&mut self.stamp, &mut self.order);
        let (_, list) = self.by_parent.entry(parent).or_insert_with(|| {
            *stamp += 1;
            order.push_back((parent, *stamp));
            (*stamp, Vec::new())
        });
        match list.iter().position(|(s, _, _)| *s == serial) {
            Some(at) if list[at].2 > start => list[at] = (serial, tid, start),
            None if list.len() < self.max_per_parent => {
                list.push((serial, tid, start));
                self.entries += 1;
            }
            _ => {}
        }
        // The parents whose first child came longest ago are likely gone
        // already (a child that ended after its parent).
        while self.entries > self.max_entries {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.by_parent.get(&old).is_some_and(|(s, _)| *s == stamp) {
                if let Some((_, list)) = self.by_parent.remove(&old) {
                    self.entries -= list.len();
                }
            }
        }
        if self.order.len() > 2 * self.by_parent.len() + 1024 {
            let by_parent = &self.by_parent;
            self.order
                .retain(|(p, s)| by_parent.get(p).is_some_and(|(stamp, _)| stamp == s));
        }
    }

    /// The child tracks of `parent`, forgotten here.
    pub fn take(&mut self, parent: u64) -> Vec<ChildTrack> {
        match self.by_parent.remove(&parent) {
            Some((_, list)) => {
                self.entries -= list.len();
                list
            }
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn key(n: u64) -> TrackKey {
        TrackKey {
            thread: Some(1),
            task: Some(format!("Task-{n}")),
        }
    }

    #[test]
    fn a_forgotten_track_comes_back_under_a_new_tid_and_the_same_name() {
        let mut tracks = Tracks::new(2, 100);
        let first = tracks.span(&key(1), 0, 10);
        assert_eq!(first.new_name.as_deref(), Some("Task-1"));
        assert_eq!(tracks.span(&key(1), 20, 30).new_name, None);
        tracks.span(&key(2), 0, 10);
        tracks.span(&key(3), 0, 10); // three tracks: Task-1, used least lately, goes
        assert!(tracks.remembered().0 <= 2);
        let again = tracks.span(&key(1), 40, 50);
        assert_ne!(again.tid, first.tid);
        assert_ne!(again.serial, first.serial);
        assert_eq!(again.new_name.as_deref(), Some("Task-1"));
    }

    #[test]
    fn arrows_of_parents_waited_for_longest_are_forgotten_first() {
        let mut arrows = PendingArrows::new(3, 2);
        arrows.note(1, (10, 1, 5));
        arrows.note(1, (10, 1, 3)); // same track, earlier: replaces
        arrows.note(1, (11, 2, 4));
        arrows.note(1, (12, 3, 4)); // a third track for one parent: dropped
        assert_eq!(arrows.remembered(), (1, 2));
        arrows.note(2, (10, 1, 6));
        arrows.note(3, (10, 1, 7)); // four entries: parent 1 goes
        assert_eq!(arrows.remembered(), (2, 2));
        assert!(arrows.take(1).is_empty());
        assert_eq!(arrows.take(3), vec![(10, 1, 7)]);
        assert_eq!(arrows.remembered(), (1, 1));
    }

    /// Whether `name` names a lane of `Task-{track}`.
    fn belongs(name: &str, track: u64) -> bool {
        let mine = format!("Task-{track}");
        name == mine || name.starts_with(&format!("{mine} (crossing spans "))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Span {
            track: u64,
            start: u64,
            len: u64,
        },
        Event {
            track: u64,
        },
        Child {
            parent: u64,
            serial: u64,
            start: u64,
        },
        Parent {
            parent: u64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..40u64, 0..1000u64, 0..100u64).prop_map(|(track, start, len)| Step::Span {
                track,
                start,
                len
            }),
            (0..40u64).prop_map(|track| Step::Event { track }),
            (0..30u64, 0..10u64, 0..1000u64).prop_map(|(parent, serial, start)| Step::Child {
                parent,
                serial,
                start
            }),
            (0..30u64).prop_map(|parent| Step::Parent { parent }),
        ]
    }

    proptest! {
        /// Whatever the order of use: the caps hold after every step, the
        /// counts kept are the true ones, every tid is named before its
        /// first use and never named twice, and a tid belongs to one track.
        #[test]
        fn the_tables_stay_within_their_caps_and_tids_stay_valid(
            steps in prop::collection::vec(step(), 1..400),
            max_tracks in 1..8usize,
            max_slices in 1..64usize,
            max_arrows in 1..16usize,
            per_parent in 1..4usize,
        ) {
            let mut tracks = Tracks::new(max_tracks, max_slices);
            let mut arrows = PendingArrows::new(max_arrows, per_parent);
            let mut named: HashMap<u32, String> = HashMap::new();
            let mut serial_of: HashMap<u32, u64> = HashMap::new();
            for step in steps {
                let placed = match step {
                    Step::Span { track, start, len } => Some((track, tracks.span(&key(track), start, start + len))),
                    Step::Event { track } => Some((track, tracks.event(&key(track)))),
                    Step::Child { parent, serial, start } => {
                        arrows.note(parent, (serial, 1, start));
                        None
                    }
                    Step::Parent { parent } => {
                        let list = arrows.take(parent);
                        let serials: HashSet<u64> = list.iter().map(|c| c.0).collect();
                        prop_assert_eq!(serials.len(), list.len());
                        prop_assert!(list.len() <= per_parent);
                        None
                    }
                };
                if let Some((track, placed)) = placed {
                    if let Some(name) = placed.new_name {
                        prop_assert!(belongs(&name, track), "{} is not a name of Task-{}", name, track);
                        prop_assert!(named.insert(placed.tid, name).is_none(), "tid named twice");
                        serial_of.insert(placed.tid, placed.serial);
                    } else {
                        prop_assert!(belongs(&named[&placed.tid], track), "tid of another track");
                        prop_assert_eq!(serial_of[&placed.tid], placed.serial);
                    }
                }
                let (n_tracks, n_slices) = tracks.remembered();
                prop_assert!(n_tracks <= max_tracks && n_slices <= max_slices.max(LANES));
                let true_slices: usize = tracks.by_key.values().flat_map(|t| &t.lanes).map(|l| l.1.len()).sum();
                prop_assert_eq!(true_slices, n_slices);
                let (parents, entries) = arrows.remembered();
                prop_assert!(entries <= max_arrows);
                prop_assert_eq!(entries, arrows.by_parent.values().map(|(_, l)| l.len()).sum::<usize>());
                prop_assert_eq!(parents, arrows.by_parent.len());
                prop_assert!(arrows.order.len() <= 2 * parents + 1024);
            }
        }
    }
}
