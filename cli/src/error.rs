//! The tool's errors and what exit code each one gives.

use std::fmt;

/// How the tool ended, as an exit code (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: problems found (`check-config`), or a file could not be written.
    Problems,
    /// 2: bad arguments or bad input.
    BadInput,
    /// 3: the backend failed.
    Backend,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Problems => 1,
            Exit::BadInput => 2,
            Exit::Backend => 3,
        }
    }
}

/// An error that ends the tool, with its message and exit code.
#[derive(Debug, thiserror::Error)]
pub struct CliError {
    exit: Exit,
    message: String,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl CliError {
    /// Bad arguments or bad input (exit code 2).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::BadInput,
            message: message.into(),
        }
    }

    /// The backend failed (exit code 3).
    pub fn backend(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Backend,
            message: message.into(),
        }
    }

    /// Problems were found, or a file could not be written (exit code 1).
    pub fn problems(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Problems,
            message: message.into(),
        }
    }

    /// The exit code this error gives.
    pub fn exit(&self) -> Exit {
        self.exit
    }
}

/// The registered event of a type string, or a bad-input error that suggests the
/// closest registered type.
pub(crate) fn find_event(event_type: &str) -> Result<&'static openedx_events::event::EventDescriptor, CliError> {
    openedx_events::registry::find(event_type).ok_or_else(|| {
        let hint = openedx_events::config::closest_event_type(event_type)
            .map(|s| format!("; did you mean {s:?}?"))
            .unwrap_or_else(|| "; `openedx-events events` lists them".to_owned());
        CliError::bad_input(format!("no event of type {event_type:?} is known to this binary{hint}"))
    })
}
