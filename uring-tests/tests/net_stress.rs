//! Many connections and few fds: 10,000 connections on one thread, an accept loop out of fds
//! that backs off and recovers, and accept backpressure (a server that stops accepting holds a
//! bounded number of fds and loses no connection).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uring::net::{AcceptBackoff, TcpListener, TcpStream};
use uring_tests::net::{assert_child_ok, echo, raise_nofile, round_trip, spawn_child, LIMIT};
use uring_tests::{is_child, open_fds, run_child, watchdog};

const TEN_K: usize = 10_000;
const TEN_K_ADDR_ENV: &str = "URING_TEST_10K_ADDR";

/// The server runtime holds 10,000 connections open at once and echoes on all of them, on one
/// thread. The clients run in a second process (on their own uring runtime): both ends in one
/// process would need 20,000+ fds, above the hard RLIMIT_NOFILE of many machines.
#[test]
fn ten_thousand_connections_on_one_thread() {
    const NAME: &str = "ten_thousand_connections_on_one_thread";
    if is_child("10k-server") {
        ten_thousand_server();
        return;
    }
    if is_child("10k-client") {
        ten_thousand_clients();
        return;
    }
    use std::io::BufRead;
    let mut server = spawn_child(NAME, "10k-server", &[]);
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server child exited before printing its address")
            .unwrap();
        // The harness may print "test NAME ... " on the same line first.
        if let Some((_, a)) = line.split_once("10k server listening on ") {
            break a.trim().to_string();
        }
    };
    let client = spawn_child(NAME, "10k-client", &[(TEN_K_ADDR_ENV, addr)]);
    let client_out = client.wait_with_output().unwrap();
    if !client_out.status.success() {
        // Nobody will close the server's connections: stop it rather than wait for its
        // watchdog.
        let _ = server.kill();
    }
    let server_rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let server_status = server.wait().unwrap();
    let mut server_err = String::new();
    use std::io::Read;
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut server_err)
        .unwrap();
    let client_stdout = String::from_utf8_lossy(&client_out.stdout);
    assert!(
        client_out.status.success(),
        "client child failed: {}\nstdout:\n{client_stdout}\nstderr:\n{}",
        client_out.status,
        String::from_utf8_lossy(&client_out.stderr)
    );
    assert!(
        server_status.success(),
        "server child failed: {server_status}\nstdout:\n{}\nstderr:\n{server_err}",
        server_rest.join("\n")
    );
    assert!(
        client_stdout.contains(&format!("echoed twice on {TEN_K} connections")),
        "{client_stdout}"
    );
    let report = server_rest
        .iter()
        .find(|l| l.contains("10k server:"))
        .unwrap_or_else(|| panic!("server did not report:\n{}", server_rest.join("\n")));
    assert!(
        report.contains(&format!("{TEN_K} open at once, {TEN_K} ended cleanly")),
        "{report}"
    );
}

fn ten_thousand_server() {
    raise_nofile(TEN_K as u64 + 500);
    watchdog(Duration::from_secs(600), || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            println!("10k server listening on {}", listener.local_addr().unwrap());
            let open = Rc::new(std::cell::Cell::new(0usize));
            let max_open = Rc::new(std::cell::Cell::new(0usize));
            let outcomes = Rc::new(RefCell::new(Vec::new()));
            let mut incoming = listener.incoming();
            let mut accepted = 0;
            while accepted < TEN_K {
                let s = incoming.next().await.unwrap().unwrap();
                accepted += 1;
                open.set(open.get() + 1);
                max_open.set(max_open.get().max(open.get()));
                let (open, outcomes) = (open.clone(), outcomes.clone());
                uring::spawn(async move {
                    let r = echo(&s).await;
                    open.set(open.get() - 1);
                    outcomes.borrow_mut().push(r);
                });
            }
            let deadline = Instant::now() + Duration::from_secs(300);
            while outcomes.borrow().len() < TEN_K {
                assert!(Instant::now() < deadline, "connections did not all end");
                uring::time::sleep(Duration::from_millis(10)).await;
            }
            let ok = outcomes.borrow().iter().filter(|r| r.is_ok()).count();
            let echoed: u64 = outcomes.borrow().iter().flatten().sum();
            println!(
                "10k server: {} open at once, {ok} ended cleanly, {echoed} bytes echoed",
                max_open.get()
            );
        });
    });
}

fn ten_thousand_clients() {
    raise_nofile(TEN_K as u64 + 500);
    let addr: SocketAddr = std::env::var(TEN_K_ADDR_ENV).unwrap().parse().unwrap();
    watchdog(Duration::from_secs(600), move || {
        uring::run(async move {
            let mut conns: Vec<Rc<TcpStream>> = Vec::with_capacity(TEN_K);
            // Connect in waves so the listen backlog never overflows (an overflow only delays
            // a SYN by a second, but that adds up).
            for wave in 0..TEN_K / 500 {
                let mut tasks = Vec::new();
                for i in 0..500 {
                    let id = (wave * 500 + i) as u32;
                    tasks.push(uring::spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        round_trip(&s, id.to_le_bytes().repeat(16)).await;
                        s
                    }));
                }
                for t in tasks {
                    conns.push(Rc::new(t.await.unwrap()));
                }
            }
            assert_eq!(conns.len(), TEN_K);
            // All are open at once: every connection echoes again, concurrently.
            let mut tasks = Vec::new();
            for (i, s) in conns.iter().enumerate() {
                let s = s.clone();
                tasks.push(uring::spawn(async move {
                    round_trip(&s, (i as u32 ^ 0xa5a5_a5a5).to_be_bytes().repeat(32)).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            println!("echoed twice on {} connections", conns.len());
        });
    });
}

#[test]
fn accept_out_of_fds_backs_off_and_recovers() {
    if is_child("emfile") {
        accept_out_of_fds_child();
        return;
    }
    let out = run_child("accept_out_of_fds_backs_off_and_recovers", "emfile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("recovered after EMFILE"),
        "child did not report recovery:\n{stdout}"
    );
}

fn accept_out_of_fds_child() {
    watchdog(LIMIT, accept_out_of_fds_child_inner);
}

fn accept_out_of_fds_child_inner() {
    uring_tests::set_nofile_limit(64);
    // Everything the test needs before the fds run out: runtime, listener, connected clients.
    let rt = uring::Runtime::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Use up every remaining fd.
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
                break;
            }
        }
    }
    let fillers = Rc::new(RefCell::new(fillers));
    rt.block_on(async {
        // A single accept reports the error, and the connection stays in the backlog.
        let e = listener.accept().await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");

        // The examples' accept loop: count attempts while out of fds for 400 ms.
        let freer = {
            let fillers = fillers.clone();
            uring::spawn(async move {
                uring::time::sleep(Duration::from_millis(400)).await;
                // Free a few fds: enough for the accepted connections.
                let mut f = fillers.borrow_mut();
                let keep = f.len().saturating_sub(8);
                f.truncate(keep);
                Instant::now()
            })
        };
        let mut incoming = listener.incoming();
        let mut backoff = AcceptBackoff::default();
        let mut attempts = 0u32;
        let mut errors = Vec::new();
        let started = Instant::now();
        let accepted = loop {
            attempts += 1;
            match incoming.next().await.unwrap() {
                Ok(s) => {
                    backoff.on_success();
                    break s;
                }
                Err(e) => {
                    errors.push(e.raw_os_error());
                    backoff.on_error(e).await.unwrap();
                }
            }
        };
        let freed_at = freer.await.unwrap();
        assert!(
            errors.iter().all(|e| *e == Some(libc::EMFILE)),
            "{errors:?}"
        );
        assert!(!errors.is_empty());
        // 10, 20, 40, 80, 100, 100... ms pauses: about 6 attempts in 400 ms. Spinning would
        // make thousands.
        assert!(
            attempts <= 15,
            "{attempts} accept attempts in {:?}: the loop spins",
            started.elapsed()
        );
        assert!(backoff.pauses() >= 2, "it paused ({})", backoff.pauses());
        // Recovered within about one maximum pause after the fds were freed.
        assert!(
            freed_at.elapsed() < Duration::from_secs(5),
            "slow recovery: {:?}",
            freed_at.elapsed()
        );
        let second = incoming.next().await.unwrap().unwrap();
        // Both connections work.
        let mut clients = clients.into_iter();
        for s in [accepted, second] {
            let mut c = clients.next().unwrap();
            let (res, _) = s.write_all(b"hi".to_vec()).await;
            res.unwrap();
            let mut two = [0u8; 2];
            use std::io::Read;
            c.read_exact(&mut two).unwrap();
            assert_eq!(&two, b"hi");
        }
        println!(
            "recovered after EMFILE: {attempts} attempts, {} pauses",
            backoff.pauses()
        );
    });
}

const BACKPRESSURE_CLIENTS: usize = 1200;
/// Connections the server takes before it stops asking: enough for its accept stream to keep
/// all of its 64 accepts armed.
const BACKPRESSURE_TAKEN: usize = 100;

/// Accept backpressure: a server that takes 100 connections from `incoming()` and then stops
/// asking while 1,100 more clients connect holds at most 64 accepted fds (the accepts its
/// stream had armed), not 1,100: the rest wait in the listen backlog (or retry their SYN).
/// When it asks again it accepts every one of them. In a child process: it raises
/// RLIMIT_NOFILE and counts the process's fds.
#[test]
fn a_server_that_stops_accepting_holds_few_fds_and_loses_no_connection() {
    const NAME: &str = "a_server_that_stops_accepting_holds_few_fds_and_loses_no_connection";
    if is_child("backpressure") {
        backpressure_child();
        return;
    }
    let out = run_child(NAME, "backpressure");
    assert_child_ok(&out, "backpressure: held");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(report) = stdout.lines().find(|l| l.contains("backpressure: held")) {
        println!("{report}");
    }
}

fn backpressure_child() {
    raise_nofile(BACKPRESSURE_CLIENTS as u64 + 1000);
    watchdog(Duration::from_secs(300), || {
        let rt = uring::Runtime::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let base = open_fds();
        // Clients on std threads: each connects, sends its number and closes, so the clients
        // hold next to no fds and the count below is the server's.
        let connected = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let connected = connected.clone();
                std::thread::spawn(move || {
                    for id in (t..BACKPRESSURE_CLIENTS).step_by(4) {
                        let mut c = std::net::TcpStream::connect(addr).expect("connect");
                        c.write_all(&(id as u32).to_le_bytes()).unwrap();
                        connected.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let (held, ids) = rt.block_on(async {
            let ids = Rc::new(RefCell::new(Vec::new()));
            let mut incoming = listener.incoming();
            // Take the first ones, so the stream keeps its full number of accepts armed...
            let mut taken = Vec::new();
            for _ in 0..BACKPRESSURE_TAKEN {
                let s = incoming.next().await.unwrap().unwrap();
                taken.push(read_id(s, ids.clone()));
            }
            for t in taken {
                t.await.unwrap();
            }
            // ...then stop asking while the other clients connect; the loop keeps turning.
            let deadline = Instant::now() + Duration::from_secs(60);
            while connected.load(Ordering::SeqCst) < 1000 && Instant::now() < deadline {
                uring::time::sleep(Duration::from_millis(10)).await;
            }
            uring::time::sleep(Duration::from_millis(300)).await;
            let held = open_fds().saturating_sub(base);
            // Ask again: every connection comes, none lost.
            let mut tasks = Vec::new();
            for _ in BACKPRESSURE_TAKEN..BACKPRESSURE_CLIENTS {
                let s = incoming.next().await.unwrap().unwrap();
                tasks.push(read_id(s, ids.clone()));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let ids = ids.borrow().clone();
            (held, ids)
        });
        for t in threads {
            t.join().unwrap();
        }
        // Up to 64 accepts armed (each takes at most one connection), and a client socket or
        // two in flight on the client threads.
        assert!(
            held <= 64 + 8,
            "a server that stopped accepting holds {held} accepted fds: no backpressure"
        );
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), BACKPRESSURE_CLIENTS, "connections lost");
        println!("backpressure: held {held} fds while {BACKPRESSURE_CLIENTS} clients connected");
    });
}

/// Reads a client's 4-byte number in a task.
fn read_id(s: TcpStream, ids: Rc<RefCell<Vec<u32>>>) -> uring::JoinHandle<()> {
    uring::spawn(async move {
        let (res, buf) = s.read_exact(Vec::with_capacity(4)).await;
        res.unwrap();
        ids.borrow_mut()
            .push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
    })
}
