//! `Filter::admit`, the filter's one decision per span or event, and
//! `Filter::interest`, what a call site caches, against their definition,
//! for random directives, spans and inherited scopes.

use std::cell::Cell;

use proptest::prelude::*;
use pykregistry_core::{FieldLookup, Filter, Interest, Level, Value};

const TARGETS: [&str; 4] = ["app", "app.db", "lib", ""];
const NAMES: [&str; 3] = ["request", "query", "other"];

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(Level::ALL.to_vec())
}

/// One directive: static (`target=level`) or span (`target[name{user=N}]=level`).
fn directive() -> impl Strategy<Value = String> {
    let lvl = prop::sample::select(vec!["trace", "debug", "info", "warn", "error", "off"]);
    prop_oneof![
        (prop::sample::select(TARGETS.to_vec()), lvl.clone()).prop_map(|(t, l)| if t.is_empty() {
            l.to_owned()
        } else {
            format!("{t}={l}")
        }),
        (
            prop::sample::select(vec!["", "app"]),
            prop::sample::select(NAMES.to_vec()),
            prop::option::of(0..3i64),
            lvl
        )
            .prop_map(|(t, n, user, l)| match user {
                Some(u) => format!("{t}[{n}{{user={u}}}]={l}"),
                None => format!("{t}[{n}]={l}"),
            }),
    ]
}

proptest! {
    #[test]
    fn admit_is_the_filter_rules(
        directives in prop::collection::vec(directive(), 0..4),
        lvl in level(),
        target in prop::sample::select(TARGETS.to_vec()),
        name in prop::sample::select(NAMES.to_vec()),
        user in prop::option::of(0..3i64),
        inherited in prop::option::of(level()),
        is_span in any::<bool>(),
    ) {
        let filter = Filter::parse(&directives.join(","), None).unwrap();
        let asked = Cell::new(false);
        let lookup = |n: &str| {
            asked.set(true);
            (n == "user").then_some(user).flatten().map(Value::I64)
        };
        let span: Option<(&str, FieldLookup<'_, Value>)> =
            is_span.then_some((name, &lookup as FieldLookup<'_, Value>));
        let inherited_asked = Cell::new(false);
        let got = filter.admit(lvl, target, || {
            inherited_asked.set(true);
            inherited
        }, span);

        let statically = filter.enabled(lvl, target);
        if filter.has_span_directives() {
            let matched = if is_span {
                filter.span_match(target, name, |n: &str| (n == "user").then_some(user).flatten().map(Value::I64))
            } else {
                None
            };
            prop_assert_eq!(
                got.enabled,
                statically || inherited.is_some_and(|l| lvl <= l) || matched.is_some()
            );
            prop_assert_eq!(got.scope, inherited.max(matched));
            // Events never match a span directive.
            if !is_span {
                prop_assert!(!asked.get());
            }
        } else {
            // Without span directives: target and level alone, and nothing
            // else is even asked (no field read, no parent lookup).
            prop_assert_eq!(got.enabled, statically);
            prop_assert_eq!(got.scope, None);
            prop_assert!(!asked.get());
            prop_assert!(!inherited_asked.get());
        }
        // What a call site caches agrees with every decision it stands for.
        match filter.interest(lvl, target) {
            Interest::Always => prop_assert!(got.enabled),
            Interest::Never => prop_assert!(!got.enabled),
            Interest::Sometimes => prop_assert!(filter.has_span_directives()),
        }
        // A more verbose inherited scope never disables.
        let wider = filter.admit(lvl, target, || Some(Level::Trace), span);
        prop_assert!(wider.enabled || !got.enabled);
    }
}
