//! The settings whose value is one of a few names (`LOG_LEVEL`,
//! `SQSAGA_BACKEND`, `SQSAGA_SQS_PRESET`, `SQSAGA_DRIFT_MODE`): their enums, accepted names and
//! parsing, shared by the settings table (`spec.rs`) and the resolved
//! [`Settings`](crate::Settings).

use std::fmt;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted name, in declaration order (the table's `Choice`).
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The canonical lowercase name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a name, ignoring ASCII case.
            pub fn from_name(name: &str) -> Option<Self> {
                $(if name.eq_ignore_ascii_case($text) { return Some($name::$variant); })+
                None
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// Least severe level that is logged (`LOG_LEVEL`).
    LogLevel {
        /// Everything, including per-message tracing.
        Trace => "trace",
        /// Developer detail.
        Debug => "debug",
        /// Normal operation (the default).
        Info => "info",
        /// Something odd that was handled.
        Warn => "warn",
        /// Something failed.
        Error => "error",
    }
}

named_enum! {
    /// Which queue and store implementation to run on (`SQSAGA_BACKEND`).
    Backend {
        /// SQLite in `data_dir`: one machine, no set-up (the default).
        Embedded => "embedded",
        /// Amazon SQS and DynamoDB.
        Aws => "aws",
    }
}

named_enum! {
    /// How long the SQS batching windows are (`SQSAGA_SQS_PRESET`): step
    /// latency against requests per step.
    SqsPreset {
        /// No waiting for batches to fill: the lowest latency, the most requests.
        Latency => "latency",
        /// Waits of up to 0.2 s (0.5 s for deletes).
        Balanced => "balanced",
        /// Waits of up to 1 s (2 s for deletes): the fewest requests (the default).
        Cost => "cost",
    }
}

named_enum! {
    /// What the drift guard does with a drifted worker (`SQSAGA_DRIFT_MODE`).
    DriftMode {
        /// Report it (metrics, fleet view) and let it work (the default).
        Observe => "observe",
        /// Keep commands away from it and fail its readiness.
        Enforce => "enforce",
    }
}
