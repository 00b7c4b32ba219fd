//! Chrome trace JSON: the format that Perfetto (ui.perfetto.dev) and `chrome://tracing`
//! open. Each [`TraceEvent`] becomes a complete event (`"ph": "X"`) on the thread of its
//! track, and each track gets a `thread_name` metadata event (`"ph": "M"`), so a
//! kernel schedule shows one row per stream and a training profile one row per phase.

use serde_json::{json, Map, Value};

/// What an event spends its time on; shown as the event's category (`cat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Arithmetic: a kernel, an op, a training step.
    Compute,
    /// Data movement between devices or hosts.
    Comm,
}

impl Role {
    /// The category name written to the trace.
    pub fn category(self) -> &'static str {
        match self {
            Role::Compute => "compute",
            Role::Comm => "comm",
        }
    }
}

/// One timed span on a track.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// What ran (a kernel's name, `step 3`).
    pub name: String,
    /// The row it is drawn on: a stream (`stream 0`), a device, `cpu`.
    pub track: String,
    /// Compute or communication.
    pub role: Role,
    /// Start, in microseconds from the beginning of the trace.
    pub start_us: f64,
    /// Duration, in microseconds.
    pub duration_us: f64,
    /// Details shown when the event is selected (`grid`, `block`, `shared_bytes`,
    /// `sm_budget`, `loss`).
    pub args: Map<String, Value>,
}

impl TraceEvent {
    /// An event without args.
    pub fn new(
        name: impl Into<String>,
        track: impl Into<String>,
        role: Role,
        start_us: f64,
        duration_us: f64,
    ) -> TraceEvent {
        TraceEvent {
            name: name.into(),
            track: track.into(),
            role,
            start_us,
            duration_us,
            args: Map::new(),
        }
    }

    /// The event with one more arg.
    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<Value>) -> TraceEvent {
        self.args.insert(key.into(), value.into());
        self
    }
}

/// The process id every event carries: one trace describes one program.
const PID: u64 = 1;

/// The Chrome trace JSON of `events`, under the process name `process`. Tracks become
/// threads numbered from 1 in order of first appearance, and are listed in that order.
pub fn chrome_trace(process: &str, events: &[TraceEvent]) -> String {
    let mut tracks: Vec<&str> = Vec::new();
    for event in events {
        if !tracks.contains(&event.track.as_str()) {
            tracks.push(&event.track);
        }
    }
    let tid = |track: &str| tracks.iter().position(|t| *t == track).map_or(0, |p| p + 1);
    let mut trace_events = vec![json!({
        "ph": "M", "pid": PID, "tid": 0, "name": "process_name",
        "args": { "name": process },
    })];
    for (k, track) in tracks.iter().enumerate() {
        trace_events.push(json!({
            "ph": "M", "pid": PID, "tid": k + 1, "name": "thread_name",
            "args": { "name": track },
        }));
        trace_events.push(json!({
            "ph": "M", "pid": PID, "tid": k + 1, "name": "thread_sort_index",
            "args": { "sort_index": k },
        }));
    }
    for event in events {
        trace_events.push(json!({
            "ph": "X",
            "pid": PID,
            "tid": tid(&event.track),
            "ts": event.start_us,
            "dur": event.duration_us,
            "name": event.name,
            "cat": event.role.category(),
            "args": event.args,
        }));
    }
    let trace = json!({ "traceEvents": trace_events, "displayTimeUnit": "ms" });
    // A `Value` built from strings and numbers always serialises.
    serde_json::to_string_pretty(&trace).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the fields that trace viewers need, as the Trace Event Format defines them.
    fn validate(trace: &Value) -> Vec<&Value> {
        let events = trace["traceEvents"]
            .as_array()
            .expect("traceEvents is a list");
        let mut complete = Vec::new();
        for e in events {
            assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
            assert!(e["name"].is_string(), "{e}");
            match e["ph"].as_str() {
                Some("X") => {
                    let ts = e["ts"].as_f64().expect("ts is a number");
                    let dur = e["dur"].as_f64().expect("dur is a number");
                    assert!(ts >= 0.0 && dur >= 0.0, "{e}");
                    assert!(e["cat"].is_string() && e["args"].is_object(), "{e}");
                    complete.push(e);
                }
                Some("M") => assert!(e["args"].is_object(), "{e}"),
                other => panic!("unexpected phase {other:?}"),
            }
        }
        complete
    }

    #[test]
    fn events_become_complete_events_on_named_threads() {
        let events = vec![
            TraceEvent::new("matmul_0", "stream 0", Role::Compute, 0.0, 12.5)
                .with_arg("grid", json!([64, 1, 1]))
                .with_arg("block", json!([128, 1, 1]))
                .with_arg("shared_bytes", 49152)
                .with_arg("sm_budget", 100),
            TraceEvent::new("all_reduce", "stream 1", Role::Comm, 3.0, 20.0),
            TraceEvent::new("softmax_1", "stream 0", Role::Compute, 12.5, 4.0),
        ];
        let text = chrome_trace("smelt", &events);
        let trace: Value = serde_json::from_str(&text).unwrap();
        let complete = validate(&trace);
        assert_eq!(complete.len(), 3);
        assert_eq!(complete[0]["tid"], 1);
        assert_eq!(complete[1]["tid"], 2);
        assert_eq!(complete[2]["tid"], 1);
        assert_eq!(complete[1]["cat"], "comm");
        assert_eq!(complete[0]["args"]["shared_bytes"], 49152);
        assert_eq!(complete[0]["dur"], 12.5);
        let names: Vec<(&Value, &Value)> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| (&e["tid"], &e["args"]["name"]))
            .collect();
        assert_eq!(
            names,
            [
                (&json!(1), &json!("stream 0")),
                (&json!(2), &json!("stream 1"))
            ]
        );
    }
}
