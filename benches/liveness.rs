//! Liveness transitions: the cost of recording data and of handling a due timer, per peer.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use heartbeat::cores::liveness::{Action, Peer, Timing};

const PEERS: usize = 10_000;

fn transitions(c: &mut Criterion) {
    let timing = Timing::DEFAULT;
    let t0 = Instant::now();
    let mut group = c.benchmark_group("liveness");
    group.throughput(Throughput::Elements(PEERS as u64));

    group.bench_function("on_data", |b| {
        let mut peers = vec![Peer::new(t0); PEERS];
        let mut now = t0;
        b.iter(|| {
            now += Duration::from_micros(1);
            for peer in &mut peers {
                black_box(peer.on_data(now));
            }
        })
    });

    group.bench_function("on_timer_rearm", |b| {
        // The peer spoke since its timer was armed: the common case for busy peers.
        let mut peers = vec![Peer::new(t0); PEERS];
        for peer in &mut peers {
            peer.on_data(t0 + Duration::from_secs(5));
        }
        let now = t0 + timing.idle;
        b.iter(|| {
            for peer in &mut peers {
                black_box(peer.on_timer(now, &timing));
            }
        })
    });

    group.bench_function("heartbeat_cycle", |b| {
        // Heartbeat 1 to count, then close: every transition a silent peer goes through.
        b.iter(|| {
            let mut closed = 0;
            for _ in 0..PEERS / 4 {
                let mut peer = Peer::new(t0);
                let mut at = peer.deadline(&timing);
                while let Action::SendHeartbeat { next, .. } | Action::Rearm(next) =
                    peer.on_timer(at, &timing)
                {
                    at = next;
                }
                closed += 1;
            }
            black_box(closed)
        })
    });
    group.finish();
}

criterion_group!(benches, transitions);
criterion_main!(benches);
