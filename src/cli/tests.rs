//! The command lines' tests: parsing, defaults, and flag over file over default.

use std::time::Duration;

use super::*;
use crate::settings::config::FileConfig;

fn server(args: &[&str]) -> ServerArgs {
    ServerArgs::try_parse_from(std::iter::once("server").chain(args.iter().copied()))
        .expect("parses")
}

fn client(args: &[&str]) -> ClientArgs {
    ClientArgs::try_parse_from(std::iter::once("client").chain(args.iter().copied()))
        .expect("parses")
}

#[test]
fn server_defaults_without_a_file() {
    let config = server(&[]).resolve(&FileConfig::default(), None).unwrap();
    assert_eq!(config.addr.to_string(), "127.0.0.1:8000");
    assert_eq!(config.timing, Timing::DEFAULT);
    assert_eq!(config.max_line, 64 * 1024);
    assert_eq!(config.max_write_buffer, 1 << 20);
    assert!(!server(&[]).settings_given());
}

#[test]
fn flags_override_the_file_and_the_file_overrides_defaults() {
    let file = config::parse(
        std::path::Path::new("c.json"),
        r#"{"server": {"host": "127.0.0.2", "port": "9000", "interval": "5s", "count": 4}}"#,
    )
    .unwrap();
    let args = server(&["--port", "0", "--interval", "250ms", "--idle", "2s"]);
    let config = args.resolve(&file, None).unwrap();
    assert_eq!(config.addr.to_string(), "127.0.0.2:0");
    assert_eq!(config.timing.interval, Duration::from_millis(250));
    assert_eq!(config.timing.count, 4, "from the file");
    assert_eq!(config.timing.idle, Duration::from_secs(2));
    assert!(args.settings_given());
}

#[test]
fn bad_flag_values_are_rejected_by_the_parser() {
    for bad in [
        &["--interval", "soon"][..],
        &["--port", "70000"],
        &["--max-line", "big"],
        &["--allow", "10.0.0.0/99"],
    ] {
        let args = std::iter::once("server").chain(bad.iter().copied());
        assert!(ServerArgs::try_parse_from(args).is_err(), "{bad:?}");
    }
}

#[test]
fn zero_where_zero_cannot_work_is_refused() {
    for bad in [
        &["--max-write-buffer", "0"][..],
        &["--max-line", "0"],
        &["--tick", "0"],
        &["--max-connections", "0"],
    ] {
        let args = std::iter::once("server").chain(bad.iter().copied());
        assert!(ServerArgs::try_parse_from(args).is_err(), "{bad:?}");
    }
    for (flags, setting) in [
        (&["--idle", "0"][..], "idle"),
        (&["--interval", "0", "--idle", "5s"], "interval"),
    ] {
        let error = server(flags).resolve(&FileConfig::default(), None);
        let error = error.expect_err("refused").to_string();
        assert!(error.starts_with(setting), "{error}");
    }
    // Issue 22: `--count 0` would close a silent peer without asking it: refused.
    let args = ["server", "--interval", "0", "--count", "0"];
    let error = ServerArgs::try_parse_from(args).expect_err("--count 0 is refused");
    assert!(error.to_string().contains("must be at least 1"), "{error}");
    let coarse = server(&["--tick", "10s", "--interval", "200ms", "--idle", "1s"]);
    let error = coarse.resolve(&FileConfig::default(), None).unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert_eq!(
        error.to_string(),
        "tick: 10s is longer than the heartbeat interval 200ms; use at most the interval"
    );
    let equal = server(&["--tick", "200ms", "--interval", "200ms", "--idle", "1s"]);
    assert!(equal.resolve(&FileConfig::default(), None).is_ok());
    for bad in [&["--connections", "0"][..], &["--connect-rate", "0"]] {
        let args = std::iter::once("client").chain(bad.iter().copied());
        assert!(ClientArgs::try_parse_from(args).is_err(), "{bad:?}");
    }
}

#[test]
fn a_bad_host_in_the_file_is_a_config_error_naming_the_key() {
    let file = config::parse(Path::new("c.json"), r#"{"server": {"host": "300.1.2.3"}}"#).unwrap();
    let error = server(&[])
        .resolve(&file, Some(Path::new("c.json")))
        .unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(
        error.to_string().starts_with("c.json: key \"server.host\""),
        "{error}"
    );
}

#[test]
fn client_message_must_be_one_line_and_bind_must_match_the_server() {
    let multi = client(&["--message", "a\nb"]).resolve(&FileConfig::default(), None);
    assert!(multi.unwrap_err().to_string().starts_with("--message"));
    let mixed = client(&["--host", "::1", "--bind", "127.0.0.1"]);
    let error = mixed.resolve(&FileConfig::default(), None).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot reach the server at [::1]"),
        "{error}"
    );
    // The file's IPv4 local address is left out for an IPv6 server named by flag.
    let file = config::parse(Path::new("c.json"), r#"{"client": {"host": "127.0.0.1"}}"#).unwrap();
    let config = client(&["--host", "::1"]).resolve(&file, None).unwrap();
    assert!(config.bind.is_empty());
}

#[test]
fn multicast_and_broadcast_addresses_are_bad_settings() {
    let none = FileConfig::default();
    for host in ["224.0.0.1", "255.255.255.255", "ff02::1"] {
        let error = server(&["--host", host]).resolve(&none, None).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
        assert!(error.to_string().starts_with("--host: "), "{error}");
        assert!(error.to_string().contains("TCP cannot listen"), "{error}");
        let error = client(&["--host", host]).resolve(&none, None).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
    }
    let error = client(&["--bind", "127.0.0.1,224.0.0.1"])
        .resolve(&none, None)
        .unwrap_err();
    assert_eq!(error.exit_code(), 2, "{error}");
    assert!(error
        .to_string()
        .starts_with("--bind: 224.0.0.1 is a multicast address"));
    let file = config::parse(
        Path::new("c.json"),
        r#"{"server": {"host": "239.1.2.3"}, "client": {"host": "255.255.255.255"}}"#,
    )
    .unwrap();
    let error = server(&[]).resolve(&file, Some(Path::new("c.json")));
    let error = error.unwrap_err().to_string();
    assert!(error.starts_with("c.json: key \"server.host\": 239.1.2.3 is a multicast"));
    let error = client(&["--host", "127.0.0.1"]).resolve(&file, Some(Path::new("c.json")));
    let error = error.unwrap_err().to_string();
    assert!(error.starts_with("c.json: key \"client.host\": 255.255.255.255 is the broadcast"));
}

#[test]
fn client_line_limit_fits_the_echo_of_its_own_message() {
    let long = "x".repeat(70_000);
    let config = client(&["--message", &long])
        .resolve(&FileConfig::default(), None)
        .unwrap();
    assert!(config.max_line >= long.len() + "Echoing...".len());
}

#[test]
fn a_host_that_is_not_an_address_is_a_setup_error() {
    let error = server(&["--host", "no such host!"])
        .resolve(&FileConfig::default(), None)
        .unwrap_err();
    assert_eq!(error.exit_code(), 1);
    assert!(error.to_string().contains("no such host!"), "{error}");
}

#[test]
fn client_connects_where_the_server_listens_and_binds_the_client_section() {
    let file = config::parse(
        std::path::Path::new("c.json"),
        r#"{"server": {"host": "127.0.0.1", "port": 8123}, "client": {"host": "127.0.0.3", "port": "0"}}"#,
    )
    .unwrap();
    let config = client(&[]).resolve(&file, None).unwrap();
    assert_eq!(config.server.to_string(), "127.0.0.1:8123");
    assert_eq!(config.bind, vec!["127.0.0.3:0".parse().unwrap()]);
    assert_eq!(config.interval, Duration::from_secs(30));
    assert!(config.verbose);
}

#[test]
fn client_load_mode_flags() {
    let args = client(&[
        "--connections",
        "500",
        "--interval",
        "0",
        "--bind",
        "127.0.0.1,127.0.0.2",
        "--json",
    ]);
    let config = args.resolve(&FileConfig::default(), None).unwrap();
    assert_eq!(config.connections, 500);
    assert_eq!(config.interval, Duration::ZERO);
    assert_eq!(config.bind.len(), 2);
    assert!(!config.verbose);
    assert!(!config.status_line, "never with --json");
    assert!(config.faults.is_empty() && !config.reconnect);
    assert_eq!(config.server_interval, Duration::from_secs(10));
}

#[test]
fn client_fault_reconnect_and_server_interval_flags() {
    let args = client(&[
        "--faults",
        "silent=10%,reset=1%",
        "--seed",
        "7",
        "--reconnect",
        "--fault-window",
        "2s",
    ]);
    let config = args.resolve(&FileConfig::default(), None).unwrap();
    assert_eq!(
        config
            .faults
            .share(crate::client::faults::FaultKind::Silent),
        0.1
    );
    assert_eq!((config.seed, config.reconnect), (7, true));
    assert_eq!(config.fault_window(), Duration::from_secs(2));
    // The server's interval comes from the flag, else from the file's server section.
    let file = config::parse(Path::new("c.json"), r#"{"server": {"interval": "500ms"}}"#).unwrap();
    let config = client(&[]).resolve(&file, None).unwrap();
    assert_eq!(config.server_interval, Duration::from_millis(500));
    let config = client(&["--server-interval", "2s"])
        .resolve(&file, None)
        .unwrap();
    assert_eq!(config.server_interval, Duration::from_secs(2));
    for bad in [
        &["--faults", "silent=200%"][..],
        &["--faults", "crash=1%"],
        &["--server-interval", "0"],
    ] {
        let args = std::iter::once("client").chain(bad.iter().copied());
        assert!(ClientArgs::try_parse_from(args).is_err(), "{bad:?}");
    }
}

/// Issue 22, the prompt rule: any flag at all but `--no-prompt` is a setting given, even one
/// that is not about timing and even with its default value; then nothing is asked.
#[test]
fn any_flag_but_no_prompt_turns_the_questions_off() {
    for flags in [
        &["--json"][..],
        &["--max-line", "1KiB"],
        &["--allow", "127.0.0.0/8"],
        &["--log-level", "debug"],
        &["--log-level", "info"],
        &["--interval", "5s"],
    ] {
        let args = server(flags);
        assert!(args.settings_given(), "{flags:?}");
        assert!(!args.asks(true), "{flags:?}");
    }
    for flags in [
        &["--json"][..],
        &["--log-level", "warn"],
        &["--message", "hi"],
    ] {
        assert!(!client(flags).asks(true), "{flags:?}");
    }
    assert!(
        server(&[]).asks(true),
        "no flag, a terminal: the original's questions"
    );
    assert!(!server(&[]).asks(false), "never without a terminal");
    assert!(!server(&["--no-prompt"]).asks(true));
    assert!(!server(&["--no-prompt"]).settings_given());
    assert!(client(&[]).asks(true));
}

/// The rule as the binaries keep it, driven through the prompt module's reader and writer:
/// with no flag, the questions are asked and Enter keeps the defaults; with `--json`, a
/// terminal gets no question at all.
#[test]
fn the_prompt_rule_decides_whether_the_questions_are_written() {
    use crate::settings::prompt;
    let run = |flags: &[&str]| -> String {
        let args = server(flags);
        let mut output = Vec::new();
        if args.asks(true) {
            let mut input: &[u8] = b"\n\n\n";
            let timing = prompt::ask_server_timing(&mut input, &mut output, Timing::DEFAULT);
            assert_eq!(
                timing.ok(),
                Some(Timing::DEFAULT),
                "Enter keeps the defaults"
            );
        }
        String::from_utf8(output).expect("text")
    };
    assert!(run(&[]).contains("Time interval between heartbeats"));
    assert_eq!(run(&["--json"]), "", "a flag was given: nothing asked");
    assert_eq!(run(&["--max-line", "64KiB"]), "");
}

/// Issue 21: a `--metrics` port equal to `--port` is a bad setting (exit 2) whose message
/// suggests changing either one, not an "address in use" that blames `--port` alone.
#[test]
fn a_metrics_port_equal_to_the_port_is_refused_suggesting_either() {
    let args = server(&["--port", "9000", "--metrics", "127.0.0.1:9000"]);
    let error = args.resolve(&FileConfig::default(), None).unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert_eq!(
        error.to_string(),
        "--metrics: 127.0.0.1:9000 is the port the server listens on (127.0.0.1:9000): give \
         the metrics a port of their own (change --metrics or --port)"
    );
    let everywhere = server(&[
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--metrics",
        "127.0.0.1:9000",
    ]);
    assert!(everywhere.resolve(&FileConfig::default(), None).is_err());
    for fine in [
        &["--port", "9000", "--metrics", "127.0.0.1:9100"][..],
        &["--port", "9000", "--metrics", "127.0.0.2:9000"],
        &["--port", "0", "--metrics", "127.0.0.1:0"],
    ] {
        assert!(
            server(fine).resolve(&FileConfig::default(), None).is_ok(),
            "{fine:?}"
        );
    }
}
