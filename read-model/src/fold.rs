//! The fold primitives every view shares: what applying an event did
//! ([`Applied`]), what can never apply ([`Poison`]), the [`View`] trait, and
//! the version guard that decodes an event and admits only the next version.
//! `views` and `analytics` both fold with them; neither imports the other.

use events::{DecodeError, Event, EventEnvelope, ProjectEvent, StreamType, TaskEvent, UserEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What applying one event to a view did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied<V> {
    /// The event was the next version; here is the new view.
    Advanced(V),
    /// The event is at or below the view's version: already applied.
    Duplicate,
    /// The event is beyond the next version; applying it would skip
    /// `expected..got`. The view stays as it is.
    Gap { expected: u64, got: u64 },
}

/// An event that can never be applied, whatever arrives later: it goes to
/// the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum Poison {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("a {got} event on the {expected} stream")]
    WrongStreamType {
        expected: &'static str,
        got: &'static str,
    },
    #[error("version 0 is not a valid event version")]
    VersionZero,
    #[error("the stream starts with `{0}` instead of its creation event")]
    NotCreatedFirst(String),
    #[error("a creation event at version {0}, after the stream already exists")]
    CreatedAgain(u64),
    #[error("`{event_type}` is not an event of a {stream} stream, as its envelope says")]
    Mismatch {
        event_type: String,
        stream: &'static str,
    },
}

/// A view that events of one stream type fold into.
pub trait View: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    const COLLECTION: &'static str;
    const STREAM_TYPE: StreamType;
    /// The stream id, as stored in `_id`.
    fn id(&self) -> &str;
    fn version(&self) -> u64;
    /// The same view at another version, nothing else changed: how an event
    /// the store refused is passed over (see the projector's `writer`).
    fn with_version(self, version: u64) -> Self;
    /// Folds one event into the view (`None`: the stream has no view yet).
    fn apply(view: Option<&Self>, env: &EventEnvelope) -> Result<Applied<Self>, Poison>;
}

/// Implements [`View`] for a document with `id: String` and
/// `version: i64` fields, folded by `$apply`.
macro_rules! impl_view {
    ($view:ty, $collection:expr, $stream_type:expr, $apply:path) => {
        impl $crate::fold::View for $view {
            const COLLECTION: &'static str = $collection;
            const STREAM_TYPE: events::StreamType = $stream_type;
            fn id(&self) -> &str {
                &self.id
            }
            fn version(&self) -> u64 {
                self.version.max(0) as u64
            }
            fn with_version(self, version: u64) -> Self {
                Self {
                    version: version as i64,
                    ..self
                }
            }
            fn apply(
                view: Option<&Self>,
                env: &events::EventEnvelope,
            ) -> Result<$crate::fold::Applied<Self>, $crate::fold::Poison> {
                $apply(view, env)
            }
        }
    };
}
pub(crate) use impl_view;

fn decode(env: &EventEnvelope, expected: StreamType) -> Result<Event, Poison> {
    if env.stream_type != expected {
        return Err(wrong_stream(expected, env.stream_type));
    }
    let event = env.decode()?;
    if event.stream_type() != env.stream_type {
        return Err(Poison::Mismatch {
            event_type: env.event_type.clone(),
            stream: env.stream_type.as_str(),
        });
    }
    if env.version == 0 {
        return Err(Poison::VersionZero);
    }
    Ok(event)
}

fn wrong_stream(expected: StreamType, got: StreamType) -> Poison {
    Poison::WrongStreamType {
        expected: expected.as_str(),
        got: got.as_str(),
    }
}

/// The event of an `expected` stream that `env` carries ([`task_event`] or
/// [`user_event`] takes it out of [`Event`]) when it is the next version
/// after `have`; otherwise `Err` with what applying it amounts to (a
/// duplicate or a gap). Poison (undecodable, wrong stream) is reported
/// before the version check.
pub(crate) fn next_event<E, V>(
    have: u64,
    env: &EventEnvelope,
    expected: StreamType,
    pick: impl FnOnce(Event) -> Option<E>,
) -> Result<Result<E, Applied<V>>, Poison> {
    let event = decode(env, expected)?;
    let got = event.stream_type();
    let event = pick(event).ok_or_else(|| wrong_stream(expected, got))?;
    Ok(match version_guard(have, env.version) {
        Some(skipped) => Err(skipped),
        None => Ok(event),
    })
}

/// [`next_event`] of a task stream.
pub(crate) fn next_task_event<V>(
    have: u64,
    env: &EventEnvelope,
) -> Result<Result<TaskEvent, Applied<V>>, Poison> {
    next_event(have, env, StreamType::Task, task_event)
}

fn task_event(e: Event) -> Option<TaskEvent> {
    match e {
        Event::Task(e) => Some(e),
        _ => None,
    }
}

pub(crate) fn project_event(e: Event) -> Option<ProjectEvent> {
    match e {
        Event::Project(e) => Some(e),
        _ => None,
    }
}

pub(crate) fn user_event(e: Event) -> Option<UserEvent> {
    match e {
        Event::User(e) => Some(e),
        _ => None,
    }
}

/// `None` when `got` is the next version after `have`, else the duplicate or gap.
fn version_guard<V>(have: u64, got: u64) -> Option<Applied<V>> {
    match check_version(have, got) {
        VersionCheck::Next => None,
        VersionCheck::Duplicate => Some(Applied::Duplicate),
        VersionCheck::Gap { expected, got } => Some(Applied::Gap { expected, got }),
    }
}

enum VersionCheck {
    Next,
    Duplicate,
    Gap { expected: u64, got: u64 },
}

fn check_version(have: u64, got: u64) -> VersionCheck {
    if got <= have {
        VersionCheck::Duplicate
    } else if got > have + 1 {
        VersionCheck::Gap {
            expected: have + 1,
            got,
        }
    } else {
        VersionCheck::Next
    }
}
