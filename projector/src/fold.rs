//! The pure fold of one stream's events in a batch onto its view, with
//! what each event did. The live writer and `rebuild` both fold with it;
//! the folds themselves are the read model's ([`View::apply`]).

use std::collections::HashMap;

use events::EventEnvelope;
use read_model::views::{Applied, View};
use uuid::Uuid;

/// What one stream's events did in a batch.
#[derive(Default)]
pub(crate) struct StreamOutcome {
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) gaps: u64,
    pub(crate) poison: Vec<(usize, String)>,
    /// Events whose view the store refused (see [`crate::write_errors`]), with the
    /// reason: dead-lettered like poison.
    pub(crate) refused: Vec<(usize, String)>,
    /// Where the stream stopped at a gap: the gap event's batch index and
    /// the first missing version.
    pub(crate) gap: Option<(usize, u64)>,
}

/// What one event did to the stream being folded.
pub(crate) enum Step<V> {
    /// The event is the next version: the view it makes.
    Advanced(V),
    /// A duplicate or poison (counted): the view stays, the fold goes on.
    Skipped,
    /// A gap (counted and reported): nothing after it may be applied.
    Gap,
}

/// Applies the event at batch index `i` to `view`, counting in `outcome`
/// everything but an advance (the caller counts what it keeps).
pub(crate) fn step<V: View>(
    view: Option<&V>,
    i: usize,
    env: &EventEnvelope,
    outcome: &mut StreamOutcome,
) -> Step<V> {
    match V::apply(view, env) {
        Ok(Applied::Advanced(next)) => Step::Advanced(next),
        Ok(Applied::Duplicate) => {
            outcome.duplicates += 1;
            Step::Skipped
        }
        Ok(Applied::Gap { expected, got }) => {
            outcome.gaps += 1;
            outcome.gap = Some((i, expected));
            report_gap::<V>(env, expected, got);
            Step::Gap
        }
        Err(poison) => {
            outcome.poison.push((i, poison.to_string()));
            Step::Skipped
        }
    }
}

/// Folds one stream's batch (sorted by version) into its view. Stops at the
/// first gap: nothing after a missing version is applied.
pub(crate) fn fold<V: View>(
    start: Option<&V>,
    stream: &[(usize, EventEnvelope)],
) -> (Option<V>, StreamOutcome) {
    let mut view = start.cloned();
    let mut outcome = StreamOutcome::default();
    for (i, env) in stream {
        match step(view.as_ref(), *i, env, &mut outcome) {
            Step::Advanced(next) => {
                view = Some(next);
                outcome.applied += 1;
            }
            Step::Skipped => {}
            Step::Gap => break,
        }
    }
    (view, outcome)
}

/// A batch's events (each with its batch index) by stream, each stream in
/// version order. Offset order within a partition is version order already;
/// sorting also repairs re-deliveries that landed in one batch.
pub(crate) fn by_stream(
    events: impl IntoIterator<Item = (usize, EventEnvelope)>,
) -> HashMap<Uuid, Vec<(usize, EventEnvelope)>> {
    let mut streams: HashMap<Uuid, Vec<(usize, EventEnvelope)>> = HashMap::new();
    for (i, env) in events {
        streams.entry(env.stream_id).or_default().push((i, env));
    }
    for stream in streams.values_mut() {
        stream.sort_by_key(|(_, env)| env.version);
    }
    streams
}

fn report_gap<V: View>(env: &EventEnvelope, expected: u64, got: u64) {
    tracing::warn!(
        stream_id = %env.stream_id,
        stream_type = V::STREAM_TYPE.as_str(),
        expected,
        got,
        "version gap: not applying past it until the missing version arrives"
    );
}
