//! `uring::task::JoinSet` against the real runtime: completion order over 10,000 tasks, drop and
//! `abort_all` cancelling, panics as errors, `len`/`is_empty`, abort handles, `try_join_next`,
//! `detach_all`, `join_all`, `shutdown`, and a `join_next` dropped midway losing nothing.
//!
//! Every test builds its own runtime inside a watchdog. Time checks are lower bounds only.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use uring::task::JoinSet;
use uring::time::sleep;
use uring_tests::{drop_flag, run_watched, scaled, Rng};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn ten_thousand_tasks_join_in_completion_order() {
    let n = scaled(10_000);
    let (joined, finished) = run_watched(LIMIT, move || async move {
        let finished = Rc::new(RefCell::new(Vec::with_capacity(n)));
        let mut set = JoinSet::new();
        let mut rng = Rng(0x5eed_1234);
        for i in 0..n {
            let ms = 1 + rng.below(40);
            let log = finished.clone();
            set.spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                // Some tasks take a second step, so finishing interleaves with timers firing.
                if i % 3 == 0 {
                    uring::yield_now().await;
                }
                log.borrow_mut().push(i);
                i
            });
        }
        assert_eq!(set.len(), n);
        let mut joined = Vec::with_capacity(n);
        while let Some(res) = set.join_next().await {
            joined.push(res.expect("task output"));
            assert_eq!(set.len(), n - joined.len());
        }
        assert!(set.is_empty());
        let finished = finished.borrow().clone();
        (joined, finished)
    });
    assert_eq!(joined.len(), n);
    assert_eq!(
        joined, finished,
        "join order is the order the tasks finished in"
    );
    let spawn_order: Vec<usize> = (0..n).collect();
    assert_ne!(
        joined, spawn_order,
        "varying sleeps finish out of spawn order"
    );
    let mut sorted = joined.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, spawn_order, "every task joined exactly once");
}

#[test]
fn dropping_the_set_aborts_its_tasks() {
    run_watched(LIMIT, || async {
        let side_effects = Rc::new(Cell::new(0usize));
        let mut guards = Vec::new();
        let mut set = JoinSet::new();
        for _ in 0..100 {
            let (guard, dropped) = drop_flag();
            guards.push(dropped);
            let effects = side_effects.clone();
            set.spawn(async move {
                let _guard = guard;
                sleep(Duration::from_millis(50)).await;
                effects.set(effects.get() + 1);
            });
        }
        // Let every task start and wait in its sleep.
        uring::yield_now().await;
        uring::yield_now().await;
        assert!(guards.iter().all(|g| !g.get()), "tasks are running");
        drop(set);
        // The aborted futures are dropped at the runtime's next turn.
        uring::yield_now().await;
        uring::yield_now().await;
        assert!(
            guards.iter().all(|g| g.get()),
            "every task's future dropped"
        );
        // Long past the tasks' sleep: had any survived, it would have counted by now.
        sleep(Duration::from_millis(200)).await;
        assert_eq!(side_effects.get(), 0, "no aborted task ran on");
    });
}

#[test]
fn dropping_a_set_before_its_tasks_ever_ran_aborts_them() {
    run_watched(LIMIT, || async {
        let ran = Rc::new(Cell::new(false));
        let (guard, dropped) = drop_flag();
        let mut set = JoinSet::new();
        let r = ran.clone();
        set.spawn(async move {
            let _guard = guard;
            r.set(true);
        });
        drop(set);
        sleep(Duration::from_millis(10)).await;
        assert!(dropped.get(), "the future was dropped");
        assert!(!ran.get(), "the task never ran");
    });
}

#[test]
fn a_panicking_task_is_an_error_and_the_others_go_on() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        set.spawn(async {
            sleep(Duration::from_millis(5)).await;
            panic!("boom in a task");
        });
        for i in 0..10u32 {
            set.spawn(async move {
                sleep(Duration::from_millis(20)).await;
                i
            });
        }
        let first = set.join_next().await.expect("a result");
        let err = first.expect_err("the panicking task finishes first");
        assert!(err.is_panic());
        assert!(!err.is_cancelled());
        let payload = err.into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in a task"));
        let mut rest = Vec::new();
        while let Some(res) = set.join_next().await {
            rest.push(res.expect("the other tasks return"));
        }
        rest.sort_unstable();
        assert_eq!(rest, (0..10).collect::<Vec<_>>());
    });
}

#[test]
fn abort_all_gives_cancelled_errors() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        for _ in 0..50 {
            set.spawn(async {
                sleep(Duration::from_secs(3600)).await;
                1
            });
        }
        uring::yield_now().await;
        set.abort_all();
        assert_eq!(set.len(), 50, "aborted tasks stay until joined");
        let mut cancelled = 0;
        while let Some(res) = set.join_next().await {
            let err = res.expect_err("aborted");
            assert!(err.is_cancelled());
            assert!(!err.is_panic());
            cancelled += 1;
        }
        assert_eq!(cancelled, 50);
        assert!(set.is_empty());
    });
}

#[test]
fn len_and_is_empty_track_spawns_and_joins() {
    run_watched(LIMIT, || async {
        let mut set: JoinSet<u32> = JoinSet::default();
        assert!(set.is_empty());
        assert_eq!(set.len(), 0);
        assert!(
            set.join_next().await.is_none(),
            "an empty set joins nothing"
        );
        set.spawn(async { 1 });
        set.spawn(async { 2 });
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
        assert_eq!(format!("{set:?}"), "JoinSet { len: 2 }");
        set.join_next().await.unwrap().unwrap();
        assert_eq!(set.len(), 1);
        // A set can be refilled after it drained.
        set.join_next().await.unwrap().unwrap();
        assert!(set.is_empty());
        set.spawn(async { 3 });
        assert_eq!(set.len(), 1);
        assert_eq!(set.join_next().await.unwrap().unwrap(), 3);
        assert!(set.join_next().await.is_none());
    });
}

#[test]
fn the_abort_handle_from_spawn_cancels_one_task() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        let slow = set.spawn(async {
            sleep(Duration::from_secs(3600)).await;
            "slow"
        });
        let fast = set.spawn(async {
            sleep(Duration::from_millis(20)).await;
            "fast"
        });
        assert!(!slow.is_finished());
        slow.abort();
        let first = set.join_next().await.unwrap();
        assert!(first.unwrap_err().is_cancelled(), "the aborted one first");
        assert!(slow.is_finished());
        assert_eq!(set.join_next().await.unwrap().unwrap(), "fast");
        assert!(fast.is_finished());
        // An abort handle outlives the set and its task; aborting then does nothing.
        drop(set);
        fast.abort();
        assert!(format!("{fast:?}").contains("finished: true"));
    });
}

#[test]
fn abort_handles_work_from_another_thread() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        let abort = set.spawn(async {
            sleep(Duration::from_secs(3600)).await;
        });
        std::thread::spawn(move || abort.abort()).join().unwrap();
        assert!(set.join_next().await.unwrap().unwrap_err().is_cancelled());
    });
}

#[test]
fn try_join_next_takes_only_finished_tasks() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        set.spawn(async {
            sleep(Duration::from_millis(20)).await;
            7
        });
        assert!(set.try_join_next().is_none(), "nothing finished yet");
        sleep(Duration::from_millis(60)).await;
        assert_eq!(set.try_join_next().unwrap().unwrap(), 7);
        assert!(set.try_join_next().is_none());
        assert!(set.is_empty());
    });
}

#[test]
fn detach_all_leaves_tasks_running() {
    run_watched(LIMIT, || async {
        let done = Rc::new(Cell::new(0));
        let mut set = JoinSet::new();
        for _ in 0..10 {
            let d = done.clone();
            set.spawn(async move {
                sleep(Duration::from_millis(10)).await;
                d.set(d.get() + 1);
            });
        }
        set.detach_all();
        assert!(set.is_empty());
        drop(set);
        sleep(Duration::from_millis(100)).await;
        assert_eq!(done.get(), 10, "detached tasks ran to the end");
    });
}

#[test]
fn join_all_and_shutdown() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        for ms in [30u64, 10, 20] {
            set.spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                ms
            });
        }
        assert_eq!(set.join_all().await, [10, 20, 30]);

        let (guard, dropped) = drop_flag();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let _guard = guard;
            sleep(Duration::from_secs(3600)).await;
        });
        set.shutdown().await;
        assert!(set.is_empty());
        assert!(dropped.get());
    });
}

#[test]
fn a_dropped_join_next_loses_no_output() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        set.spawn(async {
            sleep(Duration::from_millis(50)).await;
            "late"
        });
        let early = uring::time::timeout(Duration::from_millis(1), set.join_next()).await;
        assert!(early.is_err(), "timed out before the task finished");
        assert_eq!(set.len(), 1);
        assert_eq!(set.join_next().await.unwrap().unwrap(), "late");
    });
}

#[test]
fn a_set_can_be_joined_from_another_task() {
    run_watched(LIMIT, || async {
        let mut set = JoinSet::new();
        for i in 0..100u64 {
            set.spawn(async move {
                sleep(Duration::from_millis(i % 5)).await;
                i
            });
        }
        let joiner = uring::spawn(async move {
            let mut sum = 0;
            while let Some(res) = set.join_next().await {
                sum += res.unwrap();
            }
            sum
        });
        assert_eq!(joiner.await.unwrap(), (0..100).sum::<u64>());
    });
}
