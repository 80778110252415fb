//! The floor under a heartbeat round: the least a poll loop can do for one, for comparing the
//! server's user-space share of a round against (see BENCHMARKS.md, "A heartbeat round").
//!
//! It makes the server's system calls and no more: `epoll_wait` through mio, the same
//! timerfd alarm for the next deadline, one `send` of `heartbeat` when a peer has been quiet
//! for `IDLE`, one `recv` of its answer. What it leaves out is what the server decides: no
//! timer wheel (every deadline is `IDLE` after the last event, so a FIFO of deadlines is in
//! order), no liveness rule (a peer that never answers is asked again, never closed), no line
//! framing (an answer is whatever bytes come), no output kept, no counters but one. It is
//! not a server to use: a measuring stick.
//!
//! ```text
//! cargo build --release --example round_floor
//! target/release/examples/round_floor 9400 3      # port, idle seconds
//! heartbeat-client --port 9400 --connections 19000 --connect-rate 19000 --interval 1h ...
//! ```
//! It prints the heartbeats sent so far once a second.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat::cores::timer::timeout_until;
use heartbeat::edge::alarm::{Alarm, ALARM};
use heartbeat::edge::conn::Direct;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX - 1);
const LINE: &[u8] = b"heartbeat\n";

struct Peer {
    stream: TcpStream,
    /// When it is asked next; a queued deadline that is not this one is stale.
    due: Instant,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().as_deref().unwrap_or("9400").parse()?;
    let idle = Duration::from_secs(args.next().as_deref().unwrap_or("3").parse()?);
    let mut poll = Poll::new()?;
    let mut alarm = Alarm::new(poll.registry())?;
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut peers: Slab<Peer> = Slab::new();
    let mut queue: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    let (mut sent, mut said_at) = (0u64, Instant::now());
    loop {
        let before = Instant::now();
        let wakeup = queue.front().map(|&(at, _)| at);
        let until = timeout_until(wakeup, before);
        alarm.arm_in(wakeup.zip(until));
        poll.poll(&mut events, until)?;
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    while let Ok((mut stream, _)) = listener.accept() {
                        let entry = peers.vacant_entry();
                        let key = entry.key();
                        poll.registry()
                            .register(&mut stream, Token(key), Interest::READABLE)?;
                        let due = now + idle;
                        entry.insert(Peer { stream, due });
                        queue.push_back((due, key));
                    }
                }
                ALARM => alarm.on_event(),
                Token(key) => {
                    let Some(peer) = peers.get_mut(key) else {
                        continue;
                    };
                    match Direct(&peer.stream).read(&mut buf) {
                        Ok(0) => {
                            let peer = peers.remove(key);
                            drop(peer.stream);
                        }
                        Ok(_) => {
                            peer.due = now + idle;
                            queue.push_back((peer.due, key));
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        while let Some(&(at, key)) = queue.front() {
            if at > now {
                break;
            }
            queue.pop_front();
            let Some(peer) = peers.get_mut(key).filter(|peer| peer.due == at) else {
                continue;
            };
            if Direct(&peer.stream).write(LINE).is_ok() {
                sent += 1;
            }
            peer.due = now + idle;
            queue.push_back((peer.due, key));
        }
        if now.duration_since(said_at) >= Duration::from_secs(1) {
            said_at = now;
            println!("sent {sent}");
        }
    }
}
