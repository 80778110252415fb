//! The load client's counters and report, from events to text and JSON.

use super::*;
use crate::ops::stats::Percentiles;
use std::io;

fn facts() -> RunFacts {
    RunFacts {
        elapsed: Duration::from_secs(1),
        server_interval: Duration::from_secs(10),
        ..RunFacts::default()
    }
}

#[test]
fn from_io_maps_reasons() {
    use io::ErrorKind::*;
    let of = |k| ConnectFailure::from_io(&io::Error::from(k));
    assert_eq!(of(ConnectionRefused), ConnectFailure::Refused);
    assert_eq!(of(TimedOut), ConnectFailure::TimedOut);
    assert_eq!(of(AddrNotAvailable), ConnectFailure::AddrNotAvailable);
    assert_eq!(of(PermissionDenied), ConnectFailure::Other);
    #[cfg(unix)]
    assert_eq!(
        ConnectFailure::from_io(&io::Error::from_raw_os_error(24)),
        ConnectFailure::TooManyOpenFiles
    );
}

#[test]
fn failures_counted_by_reason() {
    let mut c = ClientStats::new(10);
    c.on_connect_failed(ConnectFailure::Refused);
    c.on_connect_failed(ConnectFailure::Refused);
    c.on_connect_failed(ConnectFailure::TooManyOpenFiles);
    let s = c.summary(&facts());
    assert_eq!(s.failed, 3);
    assert_eq!(s.failed_by_reason.len(), 2, "zero reasons are left out");
    assert_eq!(s.failed_by_reason["refused"], 2);
    assert_eq!(s.failed_by_reason["too many open files"], 1);
    let text = s.to_text();
    assert!(
        text.contains("refused 2") && text.contains("too many open files 1"),
        "{text}"
    );
}

#[test]
fn rtt_percentiles_from_known_samples() {
    let mut c = ClientStats::new(1);
    for us in 1..=1000 {
        c.on_echo(Duration::from_micros(us));
    }
    let p = c.summary(&facts()).rtt;
    assert_eq!(p.count, 1000);
    assert!((499..=501).contains(&p.p50_us), "{p:?}");
    assert!((989..=991).contains(&p.p99_us), "{p:?}");
    assert_eq!(p.max_us, 1000);
}

#[test]
fn open_connections_follow_connects_and_closes() {
    let mut c = ClientStats::new(3);
    c.on_connected(Duration::from_millis(1));
    c.on_connected(Duration::from_millis(2));
    c.on_closed(4);
    c.on_closed(0);
    c.on_closed(0); // one too many: saturates
    let s = c.summary(&facts());
    assert_eq!((s.opened, s.unanswered, s.connect_time.count), (2, 4, 2));
    assert!(c.status_line(0.0).starts_with("connected 0/3"));
}

#[test]
fn a_healthy_connection_closed_by_the_server_is_a_false_death_shown_first() {
    let mut c = ClientStats::new(2);
    c.on_closed_by_server();
    c.on_fault_detected(FaultKind::Silent, Duration::from_secs(1));
    assert_eq!(c.summary(&facts()).false_deaths, 0);
    assert!(!c.summary(&facts()).to_text().contains("WARNING"));
    c.on_closed_by_server();
    c.on_server_end(ServerEnd::FalseDeath);
    let s = c.summary(&facts());
    assert_eq!((s.closed_by_server, s.false_deaths), (2, 1));
    let text = s.to_text();
    assert!(
        text.starts_with("WARNING: the server closed 1 healthy connection as dead"),
        "{text}"
    );
    c.on_server_end(ServerEnd::FalseDeath);
    let text = c.summary(&facts()).to_text();
    assert!(text.starts_with("WARNING: the server closed 2 healthy connections"));
}

/// Goodbyes, refusals and lost connections are counted apart, and none of them is a
/// false death or sets off the warning.
#[test]
fn goodbyes_refusals_and_losses_are_named_not_false_deaths() {
    let mut c = ClientStats::new(10);
    for end in [
        ServerEnd::Goodbye,
        ServerEnd::Goodbye,
        ServerEnd::Refused,
        ServerEnd::Lost,
        ServerEnd::LostReset,
    ] {
        c.on_server_end(end);
    }
    let s = c.summary(&facts());
    let named = (s.goodbyes, s.refused_by_server, s.lost_closed, s.lost_reset);
    assert_eq!((named, s.false_deaths), ((2, 1, 1, 1), 0), "{s:?}");
    let text = s.to_text();
    assert!(!text.contains("WARNING"), "{text}");
    for row in [
        "goodbyes (End Connection at the server's stop, no heartbeat outstanding): 2",
        "refused by the server (server full, or closed before any exchange): 1",
        "lost (closed by server without End Connection): 1",
        "lost (reset by server): 1",
        "healthy connections closed by the server (false deaths): 0",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
}

/// The summary line counts connections (slots), never attempts, and gives the time they
/// took to open apart from the run's; attempts and reconnects get rows of their own.
/// Before: "14893 of 200 connections opened in 6.0 s", "1 connections".
#[test]
fn the_summary_line_counts_connections_not_attempts_with_their_own_time() {
    let mut c = ClientStats::new(200);
    for i in 0..14_893u64 {
        c.on_attempt();
        c.on_connected(Duration::from_micros(100));
        // Ten slots' connections were told the server was full every time.
        if i < 190 {
            c.on_slot_opened(Duration::from_millis(2 * i));
        }
        if i >= 200 {
            c.on_reconnect();
        }
    }
    let run = RunFacts {
        elapsed: Duration::from_secs(6),
        ..facts()
    };
    let s = c.summary(&run);
    assert_eq!(
        (s.connections_opened, s.connect_attempts, s.opened),
        (190, 14_893, 14_893)
    );
    let text = s.to_text();
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "Summary: 190 of 200 connections opened in 0.4 s (run 6.0 s)"
    );
    assert!(text.contains("\n  connect attempts: 14893\n"), "{text}");
    assert!(text.contains("\n  reconnects: 14693\n"), "{text}");

    let mut one = ClientStats::new(1);
    one.on_attempt();
    one.on_connected(Duration::from_millis(1));
    one.on_slot_opened(Duration::from_millis(3));
    let text = one.summary(&facts()).to_text();
    assert!(
        text.starts_with("Summary: 1 of 1 connection opened in 0.0 s (run 1.0 s)\n"),
        "{text}"
    );
    // Nothing happened that these rows would count: they are left out of the text, and
    // still in the JSON.
    for absent in [
        "connect attempts",
        "reconnects",
        "connections failed",
        "refused",
        "goodbyes",
        "lost",
        "ended in error",
        "output cap",
        "lines sent",
        "lines too long",
        "warnings not logged",
        "round trip",
    ] {
        assert!(!text.contains(absent), "{absent}:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&one.summary(&facts()).to_json()).expect("JSON");
    for key in [
        "reconnects",
        "lost_reset",
        "goodbyes",
        "lines_too_long",
        "connect_attempts",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
}

#[test]
fn merged_workers_sum_connections_and_keep_the_slowest_opening() {
    let mut a = ClientStats::new(2);
    a.on_slot_opened(Duration::from_millis(300));
    a.on_server_end(ServerEnd::Goodbye);
    let mut b = ClientStats::new(2);
    b.on_slot_opened(Duration::from_millis(900));
    b.on_attempt();
    a.merge(&b);
    let s = a.summary(&facts());
    assert_eq!(
        (s.connections_opened, s.connect_attempts, s.goodbyes),
        (2, 1, 1)
    );
    assert!((s.opened_in_secs - 0.9).abs() < 1e-9, "{s:?}");
}

#[test]
fn the_client_is_the_bottleneck_past_a_tenth_of_the_server_interval() {
    assert!(
        !client_was_the_bottleneck(50_000, 500_000),
        "exactly a tenth"
    );
    assert!(client_was_the_bottleneck(50_001, 500_000));
    assert!(!client_was_the_bottleneck(10, 0), "interval unknown");
    let mut c = ClientStats::new(1);
    for _ in 0..100 {
        c.on_heartbeat_answered(Duration::from_millis(60));
    }
    let quick = RunFacts {
        server_interval: Duration::from_millis(500),
        ..facts()
    };
    let s = c.summary(&quick);
    assert!(s.client_bottleneck && s.server_interval_ms == 500, "{s:?}");
    assert!(
        s.to_text()
            .starts_with("WARNING: the client was the bottleneck"),
        "{}",
        s.to_text()
    );
    assert!(!c.summary(&facts()).client_bottleneck, "60 ms < 1 s");
}

#[test]
fn faults_are_reported_per_kind_with_detection_times() {
    let mut c = ClientStats::new(10);
    c.on_fault_injected(FaultKind::Silent);
    c.on_fault_injected(FaultKind::Silent);
    c.on_fault_detected(FaultKind::Silent, Duration::from_millis(2500));
    let mut f = facts();
    f.undetected[FaultKind::Silent as usize] = 1;
    let s = c.summary(&f);
    assert_eq!(s.faults.len(), 1, "kinds never injected are left out");
    let silent = &s.faults["silent"];
    assert_eq!(
        (silent.injected, silent.detected, silent.undetected),
        (2, 1, 1)
    );
    assert!((2_497_000..=2_503_000).contains(&silent.detection.max_us));
    let text = s.to_text();
    assert!(
        text.contains("fault silent: 2 injected, 1 detected"),
        "{text}"
    );
    assert!(text.contains("silent found in"), "{text}");
}

#[test]
fn memory_per_connection_is_growth_over_open_connections() {
    let m = Memory::new(4_000_000, 5_000_000, 10_000);
    assert_eq!(m.per_connection_bytes, 100);
    assert_eq!(Memory::new(4_000_000, 5_000_000, 0).per_connection_bytes, 0);
    assert_eq!(
        Memory::new(5_000_000, 4_000_000, 10).per_connection_bytes,
        0
    );
}

#[test]
fn json_round_trips_and_is_one_line() {
    let mut c = ClientStats::new(100);
    c.on_connected(Duration::from_millis(3));
    c.on_connect_failed(ConnectFailure::TimedOut);
    c.on_closed_by_server();
    c.on_line_sent(Duration::from_micros(40));
    c.on_echo(Duration::from_micros(250));
    c.on_fault_injected(FaultKind::Reset);
    c.on_reconnect();
    let s = c.summary(&facts());
    let json = s.to_json();
    assert!(!json.contains('\n'), "{json}");
    let back: ClientSummary = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(back, s);
    assert_eq!(back.lost(), 0);
    assert_eq!(back.reconnects, 1);
}

#[test]
fn status_line_is_one_clean_line() {
    let mut c = ClientStats::new(1000);
    for _ in 0..950 {
        c.on_connected(Duration::ZERO);
    }
    c.on_echo(Duration::from_micros(120));
    let line = c.status_line(1000.0);
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(
        line.starts_with("connected 950/1000  rate 1000/s"),
        "{line}"
    );
    assert!(line.contains("p50 0.12ms"), "{line}");
}

#[test]
fn huge_durations_saturate_and_empty_histograms_are_zero() {
    let mut c = ClientStats::new(1);
    c.on_echo(Duration::MAX);
    let s = c.summary(&facts());
    assert_eq!(s.rtt.count, 1);
    assert!(s.rtt.max_us > 3_590_000_000, "{s:?}");
    assert_eq!(s.connect_time, Percentiles::default());
    assert!(s.to_text().contains("connect time p50 0.000ms"));
}
