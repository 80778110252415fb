//! Traces of the upgrade protocol with a fake clock: both sides, every rollback case.

use super::wire::{Message, PeerState, WireError, VERSION};
use super::*;

fn fixed(port: &str) -> Vec<(String, String)> {
    vec![
        ("listen address".into(), format!("127.0.0.1:{port}")),
        ("--proxy-protocol".into(), "off".into()),
    ]
}

fn drain_old(old: &mut Outgoing) -> Vec<OutAction> {
    std::iter::from_fn(|| old.poll_action()).collect()
}

fn drain_new(new: &mut Incoming) -> Vec<InAction> {
    std::iter::from_fn(|| new.poll_action()).collect()
}

fn rolled_back(actions: &[OutAction]) -> Option<&str> {
    actions.iter().find_map(|action| match action {
        OutAction::RollBack { reason } => Some(reason.as_str()),
        _ => None,
    })
}

/// An old process whose offer went out at `t0`.
fn offered(t0: Instant) -> Outgoing {
    let mut old = Outgoing::new(fixed("8000"));
    assert!(old.begin());
    assert_eq!(drain_old(&mut old), vec![OutAction::Spawn]);
    old.spawned(t0);
    let actions = drain_old(&mut old);
    assert_eq!(
        actions,
        vec![OutAction::Send(Message::Offer {
            version: VERSION,
            fixed: fixed("8000")
        })]
    );
    old
}

#[test]
fn a_whole_upgrade_hands_over_then_releases_and_exits() {
    let t0 = Instant::now();
    let mut old = offered(t0);
    let mut new = Incoming::new(fixed("8000"));
    new.received(Message::Offer {
        version: VERSION,
        fixed: fixed("8000"),
    });
    assert_eq!(drain_new(&mut new), vec![InAction::Send(Message::Ready)]);
    assert!(
        !old.is_paused(),
        "the old process serves while the new one starts"
    );
    old.received(Message::Ready);
    assert_eq!(drain_old(&mut old), vec![OutAction::HandOver]);
    assert!(old.is_paused(), "no serving while the state is on its way");
    let peer = PeerState::default();
    new.received(Message::Listeners(vec!["127.0.0.1:8000".parse().unwrap()]));
    new.received(Message::Peers(vec![peer.clone()]));
    new.received(Message::Done {
        peers: 1,
        stats: "{}".into(),
        paused: Duration::from_millis(2),
    });
    assert_eq!(
        drain_new(&mut new),
        vec![
            InAction::TakeListeners(vec!["127.0.0.1:8000".parse().unwrap()]),
            InAction::TakePeers(vec![peer]),
            InAction::TakeStats("{}".into(), Duration::from_millis(2)),
            InAction::Send(Message::TakenOver { peers: 1 }),
        ]
    );
    old.sent_all(t0 + Duration::from_millis(3));
    old.received(Message::TakenOver { peers: 1 });
    assert_eq!(
        drain_old(&mut old),
        vec![
            OutAction::Send(Message::Release),
            OutAction::Exit { peers: 1 }
        ]
    );
    assert_eq!((old.done, old.failed), (1, 0));
    assert!(new.poll_action().is_none(), "the new one waits for Release");
    new.received(Message::Release);
    assert_eq!(drain_new(&mut new), vec![InAction::Serve]);
}

#[test]
fn a_missing_binary_rolls_back_and_a_later_sigusr2_may_try_again() {
    let mut old = Outgoing::new(fixed("8000"));
    old.begin();
    drain_old(&mut old);
    assert!(!old.begin(), "one upgrade at a time");
    old.spawn_failed("No such file or directory");
    let actions = drain_old(&mut old);
    let reason = rolled_back(&actions).expect("rolled back");
    assert!(reason.contains("cannot start"), "{reason}");
    assert!(!reason.contains('\n'));
    assert!(!old.is_paused() && !old.is_under_way());
    assert_eq!(old.failed, 1);
    assert!(old.begin(), "a later SIGUSR2 tries again");
}

#[test]
fn a_binary_that_exits_at_once_rolls_back() {
    let mut old = offered(Instant::now());
    old.closed("exit status: 1");
    let actions = drain_old(&mut old);
    assert!(rolled_back(&actions).unwrap().contains("exit status: 1"));
    assert!(old.begin());
}

#[test]
fn a_binary_that_refuses_the_version_rolls_back_with_its_line() {
    let t0 = Instant::now();
    let mut old = offered(t0);
    // The new side of a binary that knows another format: decoding the offer fails.
    let mut new = Incoming::new(fixed("8000"));
    let error = WireError::Version { got: VERSION + 7 };
    new.undecodable(&error);
    let actions = drain_new(&mut new);
    let Some(InAction::Send(refusal)) = actions.first().cloned() else {
        panic!("{actions:?}");
    };
    assert!(matches!(
        actions.last(),
        Some(InAction::GiveUp { status: 2, .. })
    ));
    old.received(refusal);
    let actions = drain_old(&mut old);
    let reason = rolled_back(&actions).unwrap();
    assert!(
        reason.contains("refused") && reason.contains("format"),
        "{reason}"
    );
}

#[test]
fn a_changed_listening_address_is_refused_by_the_new_binary() {
    let mut new = Incoming::new(fixed("8001"));
    new.received(Message::Offer {
        version: VERSION,
        fixed: fixed("8000"),
    });
    let actions = drain_new(&mut new);
    let Some(InAction::Send(Message::Refuse(why))) = actions.first() else {
        panic!("{actions:?}");
    };
    assert!(
        why.contains("127.0.0.1:8000") && why.contains("127.0.0.1:8001"),
        "{why}"
    );
    assert!(matches!(actions[1], InAction::GiveUp { status: 2, .. }));
}

#[test]
fn a_silent_binary_is_given_up_on_at_five_seconds_not_before() {
    let t0 = Instant::now();
    let mut old = offered(t0);
    assert_eq!(old.poll_timeout(), Some(t0 + ANSWER_WAIT));
    old.handle_timeout(t0 + ANSWER_WAIT - Duration::from_micros(1));
    assert!(drain_old(&mut old).is_empty(), "nothing at T-1us");
    old.handle_timeout(t0 + ANSWER_WAIT);
    let actions = drain_old(&mut old);
    assert_eq!(
        actions.first(),
        Some(&OutAction::Send(Message::Abort(
            "no answer from the new binary within 5 s".into()
        ))),
        "a late answer finds Abort first"
    );
    assert!(rolled_back(&actions).unwrap().contains("within 5 s"));
    assert_eq!(old.poll_timeout(), None);
}

#[test]
fn a_binary_silent_after_the_handover_is_given_up_on_and_the_old_serves_again() {
    let t0 = Instant::now();
    let mut old = offered(t0);
    old.received(Message::Ready);
    drain_old(&mut old);
    let sent = t0 + Duration::from_secs(4);
    old.sent_all(sent);
    assert_eq!(
        old.poll_timeout(),
        Some(sent + ANSWER_WAIT),
        "5 s from the last send"
    );
    old.handle_timeout(sent + ANSWER_WAIT);
    assert!(rolled_back(&drain_old(&mut old)).is_some());
    assert!(!old.is_paused(), "serving again");
    // Its TakenOver arriving now changes nothing: the Abort is already on its way to it.
    old.received(Message::TakenOver { peers: 3 });
    assert!(drain_old(&mut old).is_empty());
    assert_eq!((old.done, old.failed), (0, 1));
}

#[test]
fn the_new_side_gives_up_on_abort_and_serves_if_the_old_vanished_after_taking_over() {
    let offer = Message::Offer {
        version: VERSION,
        fixed: fixed("8000"),
    };
    let done = Message::Done {
        peers: 0,
        stats: String::new(),
        paused: Duration::ZERO,
    };
    let mut new = Incoming::new(fixed("8000"));
    new.received(offer.clone());
    new.received(done.clone());
    drain_new(&mut new);
    new.received(Message::Abort("too late".into()));
    let actions = drain_new(&mut new);
    assert!(matches!(&actions[..], [InAction::GiveUp { status: 1, .. }]));

    let mut new = Incoming::new(fixed("8000"));
    new.received(offer.clone());
    new.received(done);
    drain_new(&mut new);
    new.closed();
    assert_eq!(drain_new(&mut new), vec![InAction::Serve]);

    let mut new = Incoming::new(fixed("8000"));
    new.received(offer);
    drain_new(&mut new);
    new.closed();
    assert!(matches!(
        &drain_new(&mut new)[..],
        [InAction::GiveUp { status: 1, .. }]
    ));
}

#[test]
fn messages_out_of_turn_roll_back_or_give_up() {
    let mut old = offered(Instant::now());
    old.received(Message::TakenOver { peers: 1 });
    let actions = drain_old(&mut old);
    assert!(rolled_back(&actions)
        .unwrap()
        .contains("TakenOver out of turn"));

    let mut new = Incoming::new(fixed("8000"));
    new.received(Message::Release);
    let actions = drain_new(&mut new);
    assert!(matches!(actions.last(), Some(InAction::GiveUp { .. })));
}

#[test]
fn a_server_that_begins_to_stop_abandons_its_upgrade_and_tells_the_new_binary() {
    let mut old = offered(Instant::now());
    old.abandon("the server is stopping");
    let actions = drain_old(&mut old);
    assert_eq!(
        actions.first(),
        Some(&OutAction::Send(Message::Abort(
            "the server is stopping".into()
        )))
    );
    assert_eq!(rolled_back(&actions), Some("the server is stopping"));
    old.abandon("again");
    assert!(drain_old(&mut old).is_empty(), "nothing under way any more");
}
