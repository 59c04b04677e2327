//! The `tracing` feature: one `uring::op` event per completion (opcode, fd, result, latency)
//! and `uring::task` events at spawn and finish, seen by a subscriber that records them.
//!
//! The recorder is the process's global subscriber (as in a real program): a thread-local one
//! (`set_default`) can miss events whose callsites another test thread met first while no
//! subscriber was set, since tracing caches a callsite's interest. So this file has one test.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use uring_tests::{run_watched, TempDir};

/// One event: its target, message and fields as text.
#[derive(Debug, Clone, Default)]
struct Seen {
    target: String,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

/// Records every event of the `uring` targets.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("uring")
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            target: event.metadata().target().to_string(),
            ..Seen::default()
        };
        event.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().push(seen);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn ops_and_tasks_are_traced_with_their_figures() {
    let recorder = Recorder::default();
    let seen = recorder.0.clone();
    tracing::subscriber::set_global_default(recorder).expect("the only subscriber");
    run_watched(Duration::from_secs(120), move || async move {
        let dir = TempDir::new("tracing");
        let path = dir.path("f");
        std::fs::write(&path, vec![7u8; 1000]).unwrap();
        let file = std::rc::Rc::new(uring::fs::File::open(&path).await.unwrap());
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let file = file.clone();
                uring::spawn(async move {
                    let (res, _) = file.read_at(Vec::with_capacity(100), i * 100).await;
                    res.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 100);
        }
        let failing = uring::spawn(async { panic!("traced panic") });
        assert!(failing.await.unwrap_err().is_panic());
    });
    let seen = seen.lock().unwrap().clone();
    let reads: Vec<&Seen> = seen
        .iter()
        .filter(|e| e.target == "uring::op" && e.get("opcode") == Some("READ"))
        .collect();
    assert_eq!(reads.len(), 5, "one event per read: {seen:#?}");
    for r in &reads {
        assert_eq!(r.get("result"), Some("100"));
        assert_eq!(r.get("more"), Some("false"));
        let fd: i32 = r.get("fd").unwrap().parse().unwrap();
        assert!(fd >= 0);
        let latency: u64 = r.get("latency_us").unwrap().parse().unwrap();
        assert!(latency < 60_000_000);
        assert_eq!(r.get("message"), Some("op completed"));
    }
    assert!(
        seen.iter()
            .any(|e| e.target == "uring::op" && e.get("opcode") == Some("OPENAT")),
        "the open too"
    );
    let spawned = seen
        .iter()
        .filter(|e| e.target == "uring::task" && e.get("message") == Some("task spawned"))
        .count();
    let outcomes: Vec<&str> = seen
        .iter()
        .filter(|e| e.target == "uring::task" && e.get("message") == Some("task finished"))
        .filter_map(|e| e.get("outcome"))
        .collect();
    assert!(
        spawned >= 6,
        "the five readers and the panicking task: {spawned}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "returned").count(),
        5 + (spawned - 6)
    );
    assert_eq!(outcomes.iter().filter(|o| **o == "panicked").count(), 1);
}
