//! Verbosity levels, ordered as in `tracing`.

use std::fmt;

/// A span's or event's verbosity.
///
/// Ordered as `tracing` orders them: more verbose is greater, so
/// `Trace > Debug > Info > Warn > Error`. The discriminants are the values the
/// Python `Level` enum uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Level {
    /// Errors.
    Error = 1,
    /// Warnings.
    Warn = 2,
    /// Information (the default).
    #[default]
    Info = 3,
    /// Debugging detail.
    Debug = 4,
    /// Very verbose tracing.
    Trace = 5,
}

impl Level {
    /// All levels, least verbose first.
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ];

    /// The level whose discriminant is `n`.
    #[must_use]
    pub fn from_u8(n: u8) -> Option<Level> {
        Self::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The level named `name`, ignoring ASCII case (`"warning"` is `Warn`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Level> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
            .or_else(|| name.eq_ignore_ascii_case("warning").then_some(Level::Warn))
            .or_else(|| {
                name.eq_ignore_ascii_case("critical")
                    .then_some(Level::Error)
            })
    }

    /// The level of a stdlib `logging` level number (`logging.WARNING` is
    /// 30): 40 to 50 (`ERROR`, `CRITICAL`) is [`Level::Error`], then 30
    /// `Warn`, 20 `Info` and 10 `Debug`, custom levels in between rounding
    /// down; `None` outside 10 to 50 (below 10 are `NOTSET` and this crate's
    /// own level values).
    #[must_use]
    pub fn from_logging(n: i64) -> Option<Level> {
        match n {
            40..=50 => Some(Level::Error),
            30..=39 => Some(Level::Warn),
            20..=29 => Some(Level::Info),
            10..=19 => Some(Level::Debug),
            _ => None,
        }
    }

    /// The upper-case name, as `tracing` prints it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<tracing_core::Level> for Level {
    fn from(level: tracing_core::Level) -> Self {
        match level {
            tracing_core::Level::ERROR => Level::Error,
            tracing_core::Level::WARN => Level::Warn,
            tracing_core::Level::INFO => Level::Info,
            tracing_core::Level::DEBUG => Level::Debug,
            _ => Level::Trace,
        }
    }
}

impl From<Level> for tracing_core::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Error => tracing_core::Level::ERROR,
            Level::Warn => tracing_core::Level::WARN,
            Level::Info => tracing_core::Level::INFO,
            Level::Debug => tracing_core::Level::DEBUG,
            Level::Trace => tracing_core::Level::TRACE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_tracing() {
        assert!(Level::Trace > Level::Debug);
        assert!(Level::Debug > Level::Info);
        assert!(Level::Info > Level::Warn);
        assert!(Level::Warn > Level::Error);
        for l in Level::ALL {
            assert_eq!(Level::from(tracing_core::Level::from(l)), l);
            assert_eq!(Level::from_u8(l as u8), Some(l));
            assert_eq!(Level::from_name(&l.as_str().to_lowercase()), Some(l));
        }
        assert_eq!(Level::from_u8(0), None);
        assert_eq!(Level::from_u8(6), None);
        assert_eq!(Level::from_name("loud"), None);
    }
}
