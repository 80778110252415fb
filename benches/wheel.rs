//! Timer wheel costs with a million keys scheduled, as a loaded server holds them.
//!
//! - `insert`: a million keys into an empty wheel, per entry.
//! - `rearm`: moving an existing key to a new deadline (what the server does after a
//!   heartbeat), per entry.
//! - `tick/k`: one tick with `k` entries due among the million, per due entry; each due entry
//!   is re-armed one round later, as liveness does, so every tick has exactly `k` due.
//!
//! - `cycle/slots` and `cycle/lane`: a heartbeat's cycle, a million keys each due every 3,000
//!   ticks (3 s at 1 ms) and each re-armed for 3,000 ticks after it comes due, per due entry:
//!   in the wheel's slots (cascaded down the levels on its way) or in a FIFO lane (taken from
//!   the front, pushed at the back), as `timer.rs` files timers armed as now plus a delay.
//!
//! `cargo bench --bench wheel` prints time per entry (`elem/s` is its inverse).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use heartbeat::cores::wheel::Wheel;

/// Keys scheduled, as for a server holding a million idle connections.
const N: usize = 1_000_000;
/// Deadlines spread over 30 s of 1 ms ticks (the default idle timeout).
const SPREAD: u64 = 30_000;
/// Keys re-armed per `rearm` iteration.
const REARMS: usize = 1_000;

/// A permutation of `0..N` (999,983 is prime, so coprime with `N`), so that neighbouring
/// keys get unrelated deadlines.
fn scatter(i: usize) -> u64 {
    (i as u64 * 999_983) % N as u64
}

fn spread_out() -> Wheel {
    let mut wheel = Wheel::with_capacity(N);
    for key in 0..N {
        wheel.insert(key, 1 + scatter(key) % SPREAD);
    }
    wheel
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("wheel");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("insert", |b| {
        b.iter_batched_ref(
            || Wheel::with_capacity(N),
            |wheel| {
                for key in 0..N {
                    wheel.insert(key, 1 + scatter(key) % SPREAD);
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn rearm(c: &mut Criterion) {
    let mut wheel = spread_out();
    let mut round = 0u64;
    let mut group = c.benchmark_group("wheel");
    group.throughput(Throughput::Elements(REARMS as u64));
    group.bench_function("rearm", |b| {
        b.iter(|| {
            round += 1;
            let first = (round as usize * REARMS) % N;
            for key in first..first + REARMS {
                let deadline = 1 + (scatter(key) + round) % SPREAD;
                wheel.insert(black_box(key), deadline);
            }
        })
    });
    group.finish();
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("wheel/tick");
    for k in [1usize, 100, 10_000] {
        // Key `i` is due at tick `1 + scatter(i) / k`: every tick has `k` due, over `N / k` ticks.
        let rounds = (N / k) as u64;
        let mut wheel = Wheel::with_capacity(N);
        for key in 0..N {
            wheel.insert(key, 1 + scatter(key) / k as u64);
        }
        let mut now = 0;
        group.throughput(Throughput::Elements(k as u64));
        group.bench_function(BenchmarkId::from_parameter(k), |b| {
            b.iter(|| {
                now += 1;
                let mut due = 0;
                while let Some((key, deadline)) = wheel.poll(now) {
                    wheel.insert(key, deadline + rounds);
                    due += 1;
                }
                black_box(due)
            })
        });
        assert_eq!(wheel.len(), N);
    }
    group.finish();
}

/// Ticks between a key's rounds in `cycle`.
const PERIOD: u64 = 3_000;

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("wheel/cycle");
    // Key `i` first comes due at tick `1 + scatter(i) * PERIOD / N`: 333 or 334 keys a
    // tick, neighbours in time apart in memory, as peers' slab keys are.
    let first_due = |key: usize| 1 + scatter(key) * PERIOD / N as u64;
    let mut by_due: Vec<usize> = (0..N).collect();
    by_due.sort_unstable_by_key(|&key| scatter(key));
    let per_tick = (N as u64 / PERIOD) as usize;
    group.throughput(Throughput::Elements(per_tick as u64));

    let mut wheel = Wheel::with_capacity(N);
    for key in 0..N {
        wheel.insert(key, first_due(key));
    }
    let mut now = 0;
    group.bench_function("slots", |b| {
        b.iter(|| {
            now += 1;
            let mut due = 0;
            while let Some((key, _)) = wheel.poll(now) {
                wheel.insert(key, now + PERIOD);
                due += 1;
            }
            black_box(due)
        })
    });
    assert_eq!(wheel.len(), N);

    let mut wheel = Wheel::with_capacity(N);
    for key in by_due {
        assert!(wheel.push_lane(key, 0, first_due(key)));
    }
    let mut now = 0;
    group.bench_function("lane", |b| {
        b.iter(|| {
            now += 1;
            let mut due = 0;
            while let Some((key, _)) = wheel.lane_front(0).filter(|&(_, at)| at <= now) {
                wheel.remove(key);
                wheel.push_lane(key, 0, now + PERIOD);
                due += 1;
            }
            black_box(due)
        })
    });
    assert_eq!(wheel.len(), N);
    group.finish();
}

criterion_group!(benches, insert, rearm, tick, cycle);
criterion_main!(benches);
