//! Filter directives in the syntax of `tracing-subscriber`'s `EnvFilter`.
//!
//! A filter is a comma-separated list of directives
//! `target[span{field=value,...}]=level`, every part optional:
//!
//! - `warn` — everything at `WARN` and less verbose;
//! - `app.db=debug` — targets starting with `app.db` up to `DEBUG`;
//! - `app.db` — a bare target enables all its levels;
//! - `[request]=trace` — spans named `request` are enabled (at any level, as
//!   `EnvFilter` enables spans a span directive matches, since they take part
//!   in filtering), and everything inside a `request` span (its descendants,
//!   and events in it) up to `TRACE`;
//! - `[{user=42}]=debug`, `app[request{path="/"}]=debug` — the same, for
//!   spans with those field values (and target);
//! - level `off` disables.
//!
//! Static directives (no `[...]`) decide by target and level alone: the one
//! with the longest matching target prefix wins. A target no static directive
//! matches is disabled. Span directives add to that: a span enabled by a
//! static directive or by a span directive it matches, or created inside a
//! span that matched one, carries that directive's level down its subtree.

use std::borrow::Borrow;
use std::fmt;

use crate::{Level, Value};

/// A parsed filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Static directives, longest target first.
    statics: Vec<StaticDirective>,
    spans: Vec<SpanDirective>,
}

/// What a filter decides for one span or event ([`Filter::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Whether the span or event is enabled.
    pub enabled: bool,
    /// The span-directive level a span carries down its subtree: what its
    /// children and events see as `inherited`.
    pub scope: Option<Level>,
}

/// What a filter says about a call site (a level and target fixed once),
/// as `tracing-core`'s `Interest`: what a call site may cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Every span is enabled.
    Always,
    /// No span can be.
    Never,
    /// Span directives decide per span ([`Filter::admit`]).
    Sometimes,
}

/// A span's field values by name, for span directives that name fields.
pub type FieldLookup<'a, V> = &'a dyn Fn(&str) -> Option<V>;

impl Admission {
    /// Everything enabled, no scope: what no filter decides.
    pub const ALL: Admission = Admission {
        enabled: true,
        scope: None,
    };
}

#[derive(Debug, Clone, PartialEq)]
struct StaticDirective {
    target: String,
    /// `None` is `off`.
    level: Option<Level>,
}

#[derive(Debug, Clone, PartialEq)]
struct SpanDirective {
    target: Option<String>,
    name: Option<String>,
    fields: Vec<FieldMatch>,
    level: Option<Level>,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldMatch {
    name: String,
    /// `None`: the field only has to be present.
    value: Option<Value>,
}

/// A directive that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The directive as written.
    pub directive: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid filter directive {:?}: {} (expected target[span{{field=value}}]=level, e.g. \"warn,app.db=debug,[request]=trace\")",
            self.directive, self.reason
        )
    }
}

impl std::error::Error for FilterError {}

// === impl Filter ===

impl Filter {
    /// A filter with one default directive: everything up to `level`.
    #[must_use]
    pub fn from_level(level: Option<Level>) -> Self {
        Filter {
            statics: vec![StaticDirective {
                target: String::new(),
                level,
            }],
            spans: Vec::new(),
        }
    }

    /// Parses comma-separated directives. `default` is appended as the least
    /// specific directive (it loses to any directive that names a target).
    pub fn parse(directives: &str, default: Option<Option<Level>>) -> Result<Self, FilterError> {
        let mut filter = Filter::default();
        for raw in split_top_level(directives) {
            let d = raw.trim();
            if d.is_empty() {
                continue;
            }
            filter.push(d).map_err(|reason| FilterError {
                directive: d.to_owned(),
                reason,
            })?;
        }
        if let Some(level) = default {
            if !filter.statics.iter().any(|s| s.target.is_empty()) {
                filter.statics.push(StaticDirective {
                    target: String::new(),
                    level,
                });
            }
        }
        filter
            .statics
            .sort_by_key(|s| std::cmp::Reverse(s.target.len()));
        Ok(filter)
    }

    fn push(&mut self, d: &str) -> Result<(), &'static str> {
        let (selector, level) = match d.rfind('=') {
            // An `=` inside `{...}` belongs to a field match.
            Some(at) if !inside_braces(d, at) => (&d[..at], parse_level(d[at + 1..].trim())?),
            _ => match parse_level(d) {
                // A lone level is the default directive.
                Ok(level) if !d.contains('[') => {
                    self.statics.push(StaticDirective {
                        target: String::new(),
                        level,
                    });
                    return Ok(());
                }
                _ => (d, Some(Level::Trace)),
            },
        };
        let selector = selector.trim();
        if selector
            .char_indices()
            .any(|(i, c)| c == '=' && !inside_braces(selector, i))
        {
            return Err("more than one '=' outside field matches");
        }
        match selector.find('[') {
            None => {
                if selector.contains(['{', '}', ']']) {
                    return Err("unbalanced brackets");
                }
                self.statics.push(StaticDirective {
                    target: selector.to_owned(),
                    level,
                });
            }
            Some(open) => {
                let target = selector[..open].trim();
                let rest = selector[open + 1..]
                    .strip_suffix(']')
                    .ok_or("a span selector must end with ']'")?;
                let (name, fields) = match rest.find('{') {
                    None => (rest.trim(), Vec::new()),
                    Some(brace) => {
                        let body = rest[brace + 1..]
                            .strip_suffix('}')
                            .ok_or("field matches must end with '}'")?;
                        (rest[..brace].trim(), parse_fields(body)?)
                    }
                };
                self.spans.push(SpanDirective {
                    target: (!target.is_empty()).then(|| target.to_owned()),
                    name: (!name.is_empty()).then(|| name.to_owned()),
                    fields,
                    level,
                });
            }
        }
        Ok(())
    }

    /// The most verbose level the static directives allow for `target`;
    /// `None` if they disable it.
    #[must_use]
    pub fn static_level(&self, target: &str) -> Option<Level> {
        self.statics
            .iter()
            .find(|s| target.starts_with(&*s.target))
            .and_then(|s| s.level)
    }

    /// Whether the static directives enable `level` for `target`.
    #[must_use]
    pub fn enabled(&self, level: Level, target: &str) -> bool {
        self.static_level(target).is_some_and(|max| level <= max)
    }

    /// Whether anything at `level` can be enabled, whatever its target,
    /// name, fields and parent: `false` lets a caller refuse before it
    /// works out a target.
    #[must_use]
    pub fn could_enable(&self, level: Level) -> bool {
        self.has_span_directives()
            || self
                .statics
                .iter()
                .any(|s| s.level.is_some_and(|max| level <= max))
    }

    /// Whether any span directive exists; without one, decisions depend on
    /// target and level alone and can be cached for good.
    #[must_use]
    pub fn has_span_directives(&self) -> bool {
        !self.spans.is_empty()
    }

    /// Whether a span directive could match a span with this target and name
    /// (fields unknown yet).
    #[must_use]
    pub fn could_match_span(&self, target: &str, name: &str) -> bool {
        self.spans.iter().any(|d| d.matches_meta(target, name))
    }

    /// What [`Filter::admit`] can be known to answer for every span at
    /// `level` and `target`, before any is made.
    #[must_use]
    pub fn interest(&self, level: Level, target: &str) -> Interest {
        if self.enabled(level, target) {
            Interest::Always
        } else if self.has_span_directives() {
            Interest::Sometimes
        } else {
            Interest::Never
        }
    }

    /// The filter's one decision for a span or an event at `level` and
    /// `target`: `span` gives a span's name and its field values by name
    /// (`None` for an event), `inherited` the scope its parent carries
    /// (asked only when span directives exist, as is `span`'s field lookup).
    ///
    /// Enabled when a static directive enables it, when `inherited` is at
    /// least as verbose as `level`, or, for a span, when a span directive
    /// matches it: as `EnvFilter`, such a span is enabled at any level, since
    /// it takes part in filtering. Unlike `EnvFilter`, which decides per
    /// call site before it sees values, the fields are known here: a span
    /// whose fields do not match is not enabled by the directive. Its scope
    /// is the more verbose of `inherited` and the matching directives'.
    pub fn admit<V: Borrow<Value>>(
        &self,
        level: Level,
        target: &str,
        inherited: impl FnOnce() -> Option<Level>,
        span: Option<(&str, FieldLookup<'_, V>)>,
    ) -> Admission {
        let statically = self.enabled(level, target);
        if !self.has_span_directives() {
            return Admission {
                enabled: statically,
                scope: None,
            };
        }
        let inherited = inherited();
        let matched = span.and_then(|(name, fields)| self.span_match(target, name, fields));
        Admission {
            enabled: statically || inherited.is_some_and(|l| level <= l) || matched.is_some(),
            scope: inherited.max(matched),
        }
    }

    /// The most verbose level of the span directives matching this span.
    pub fn span_match<V: Borrow<Value>>(
        &self,
        target: &str,
        name: &str,
        fields: impl Fn(&str) -> Option<V>,
    ) -> Option<Level> {
        self.spans
            .iter()
            .filter(|d| {
                d.matches_meta(target, name)
                    && d.fields.iter().all(|m| match (fields(&m.name), &m.value) {
                        (Some(_), None) => true,
                        (Some(v), Some(want)) => values_match(v.borrow(), want),
                        (None, _) => false,
                    })
            })
            .filter_map(|d| d.level)
            .max()
    }
}

impl SpanDirective {
    fn matches_meta(&self, target: &str, name: &str) -> bool {
        self.target.as_deref().is_none_or(|t| target.starts_with(t))
            && self.name.as_deref().is_none_or(|n| n == name)
    }
}

/// Whether a recorded value equals a directive's value. Floats match
/// exactly, as `EnvFilter` matches them: a directive names a value, it does
/// not measure one.
#[allow(clippy::float_cmp, clippy::cast_precision_loss)]
fn values_match(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::I64(a), Value::I64(b)) => a == b,
        (Value::U64(a), Value::U64(b)) => a == b,
        (Value::F64(a), Value::F64(b)) => a == b,
        (Value::F64(a), Value::I64(b)) => *a == *b as f64,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (have, Value::Str(want)) => have.to_string() == **want,
        (have, want) => have.to_string() == want.to_string(),
    }
}

fn parse_level(s: &str) -> Result<Option<Level>, &'static str> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    Level::from_name(s)
        .map(Some)
        .ok_or("unknown level (trace, debug, info, warn, error or off)")
}

fn parse_fields(body: &str) -> Result<Vec<FieldMatch>, &'static str> {
    split_top_level(body)
        .into_iter()
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            None => Ok(FieldMatch {
                name: f.to_owned(),
                value: None,
            }),
            Some((name, value)) => {
                let name = name.trim();
                if name.is_empty() {
                    return Err("a field match needs a field name");
                }
                Ok(FieldMatch {
                    name: name.to_owned(),
                    value: Some(parse_value(value.trim())),
                })
            }
        })
        .collect()
}

fn parse_value(s: &str) -> Value {
    if let Some(quoted) = s
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')))
    {
        return Value::Str(quoted.into());
    }
    if let Ok(b) = s.parse::<bool>() {
        Value::Bool(b)
    } else if let Ok(n) = s.parse::<i64>() {
        Value::I64(n)
    } else if let Ok(n) = s.parse::<u64>() {
        Value::U64(n)
    } else if let Ok(x) = s.parse::<f64>() {
        Value::F64(x)
    } else {
        Value::Str(s.into())
    }
}

/// Splits on commas that are not inside `[...]`, `{...}` or quotes.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn inside_braces(s: &str, at: usize) -> bool {
    let before = &s[..at];
    before.matches('{').count() > before.matches('}').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Filter {
        Filter::parse(s, None).unwrap()
    }

    #[test]
    fn most_specific_target_wins() {
        let f = parse("warn,app.db=debug,app=error");
        assert!(f.enabled(Level::Warn, "other"));
        assert!(!f.enabled(Level::Info, "other"));
        assert!(f.enabled(Level::Debug, "app.db.pool"));
        assert!(!f.enabled(Level::Trace, "app.db"));
        assert!(!f.enabled(Level::Warn, "app.web"));
        assert!(f.enabled(Level::Error, "app.web"));
    }

    #[test]
    fn could_enable_is_the_most_verbose_static_level_unless_span_directives() {
        let f = parse("warn,app.db=debug,app.noisy=off");
        assert!(f.could_enable(Level::Debug));
        assert!(!f.could_enable(Level::Trace));
        let levels = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ];
        for target in ["", "app", "app.db.pool", "app.noisy", "lib"] {
            for level in levels {
                assert!(f.could_enable(level) || !f.enabled(level, target));
            }
        }
        assert!(!parse("off").could_enable(Level::Error));
        assert!(parse("off,[request]=info").could_enable(Level::Trace));
    }

    #[test]
    fn unmatched_targets_are_disabled_and_off_disables() {
        let f = parse("app=info,app.noisy=off");
        assert!(!f.enabled(Level::Error, "lib"));
        assert!(f.enabled(Level::Info, "app"));
        assert!(!f.enabled(Level::Error, "app.noisy.x"));
    }

    #[test]
    fn bare_target_enables_every_level_and_default_loses() {
        let f = Filter::parse("app", Some(Some(Level::Warn))).unwrap();
        assert!(f.enabled(Level::Trace, "app.x"));
        assert!(f.enabled(Level::Warn, "lib"));
        assert!(!f.enabled(Level::Info, "lib"));
    }

    #[test]
    fn span_directives_match_name_target_and_fields() {
        let f = parse(r#"warn,[request]=trace,app[job{id=42,kind="x"}]=debug,[{user}]=info"#);
        assert!(f.has_span_directives());
        let none = |_: &str| None::<&Value>;
        assert_eq!(f.span_match("any", "request", none), Some(Level::Trace));
        assert_eq!(f.span_match("any", "other", none), None);
        let id = Value::I64(42);
        let kind = Value::Str("x".into());
        let fields = |n: &str| match n {
            "id" => Some(&id),
            "kind" => Some(&kind),
            _ => None,
        };
        assert_eq!(f.span_match("app.w", "job", fields), Some(Level::Debug));
        assert_eq!(f.span_match("lib", "job", fields), None);
        assert_eq!(
            f.span_match("app", "job", |n| (n == "id").then_some(&id)),
            None
        );
        let user = Value::Str("u".into());
        assert_eq!(
            f.span_match("x", "y", |n| (n == "user").then_some(&user)),
            Some(Level::Info)
        );
        assert!(f.could_match_span("app", "job"));
        assert!(!f.could_match_span("lib", "job") || f.could_match_span("lib", "anything"));
    }

    #[test]
    fn bad_directives_are_errors() {
        for bad in [
            "app=loud",
            "[request=info",
            "[a{b=1]=info",
            "app]=info",
            "app=info=debug",
            "app==debug",
        ] {
            assert!(Filter::parse(bad, None).is_err(), "{bad}");
        }
        let e = Filter::parse("x=nope", None).unwrap_err();
        assert!(e.to_string().contains("x=nope"), "{e}");
    }
}
