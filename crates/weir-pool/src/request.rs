//! What a checkout carries: what the pool needs to order waiters and to refuse them.

use std::time::Duration;

/// How important a client's work is; the wait queue serves more important classes
/// first (with aging) and sheds the least important first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Class {
    /// Never shed for another class; served first.
    Critical = 0,
    /// Served before normal work.
    High = 1,
    /// Everyone, unless told otherwise.
    #[default]
    Normal = 2,
    /// Less important work.
    Low = 3,
    /// Background work: served last, shed first.
    Background = 4,
}

/// Number of classes.
pub(crate) const CLASSES: usize = 5;

impl Class {
    /// Every class, most important first.
    pub const ALL: [Class; CLASSES] = [
        Class::Critical,
        Class::High,
        Class::Normal,
        Class::Low,
        Class::Background,
    ];

    /// Lower-case name, as configured and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Critical => "critical",
            Class::High => "high",
            Class::Normal => "normal",
            Class::Low => "low",
            Class::Background => "background",
        }
    }

    pub(crate) fn from_index(i: usize) -> Class {
        match i {
            0 => Class::Critical,
            1 => Class::High,
            2 => Class::Normal,
            3 => Class::Low,
            _ => Class::Background,
        }
    }
}

/// One checkout's request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checkout {
    /// Its class.
    pub class: Class,
    /// How long it may wait for a connection; `None` = the pool's `wait_timeout`. A
    /// waiter whose expected wait (queue position over the pool's release rate) is
    /// longer is shed at once instead of timing out later.
    pub budget: Option<Duration>,
}
