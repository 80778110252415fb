//! A live upgrade of the workers (SIGUSR2 to the server's parent): a round replaces every
//! worker, one at a time, by the binary now at the path the parent was started from, and
//! every peer stays.
//!
//! The plumbing, and why: for worker `k`, the parent starts the new worker itself (so it is
//! the parent's child from the first instant: supervised, reaped and signalled like any
//! other, its stdout read by the parent's own thread, its stdin a link of its own), makes a
//! socket pair for the upgrade channel, and hands one end to each worker over its link
//! (SCM_RIGHTS beside one byte: `server::parent`'s `CHANNEL` to the new one, `UPGRADE` to the
//! old one). The two workers then run the single server's handover (`server::upgrade`,
//! `server::takeover`): listener, peers with their state, pause, counters; each peer is
//! served by exactly one of them at any time. The channel never has a path; only the two
//! workers hold it. (The other way, the old worker upgrading itself, would make the new
//! worker a grandchild that only a child subreaper could adopt, with no link of its own to
//! the parent and no `Child` to wait for.)
//!
//! The new worker's first line (`ready`) says it serves: it takes the slot (the old one's
//! last counts stay in the tally until the new one's first report, which carries them on:
//! nothing counted twice), the old one is reaped when it ends, and the round goes on to the
//! next worker. Otherwise the old worker serves on and says why (`upgrade_given_up`), or the
//! new one could not be started; the parent logs one line with the reason and ends the round
//! there: the other workers keep their binary, and a later SIGUSR2 may try again.
//!
//! With `--tls-cert`, an old worker that handed over keeps its TLS peers (`server::upgrading`)
//! and lingers in [`Upgrades::leaving`] with its link (whose end would stop it): asked for its
//! counts (only what happened since the handover, which the parent adds), stopped like any
//! worker, waited for before the parent's summary. A later round replaces the slots' new
//! workers while old ones linger.
//!
//! A stop signal during a round ends the round; the old worker, stopping, gives the upgrade
//! up, unless it had already handed its peers over: then the new worker is passed the
//! signal as soon as it serves.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{send_signal, Supervisor, Watch};
use crate::edge::net::describe;
use crate::server::parent::{CHANNEL, UPGRADE};
use crate::workers::{Ended, FIRST_BACKOFF, TAKEOVER_ENV};

/// Once the new worker has ended, how long the parent waits for the old one to say why
/// (its line and the new one's end come on different pipes, in either order), and once the
/// old one has said why, how long the new one has to exit before it is ended.
const VERDICT_WAIT: Duration = Duration::from_secs(1);

/// The parent's upgrade state.
pub(super) struct Upgrades {
    /// The path the parent was started from is known (else SIGUSR2 is answered with why not).
    known: bool,
    /// The round under way: the next slot to replace, and how many were replaced.
    round: Option<Round>,
    /// Old workers that handed their peers over, until they end.
    pub(super) leaving: Vec<Leaving>,
}

/// An old worker that handed its peers over. Without TLS it is on its way out; with
/// `--tls-cert` it serves the TLS peers it kept (see `server::upgrading`) until they leave,
/// `--tls-upgrade-keep` passes, or a stop: it is asked for its counts (what happened since
/// the handover) like any worker, and stopped like any worker.
pub(super) struct Leaving {
    pub(super) slot: usize,
    pub(super) generation: u32,
    pub(super) child: Child,
    /// Its link, kept open: its end would stop the worker, ending its kept peers at once.
    pub(super) link: Option<UnixStream>,
    /// Asked for its counts and not answered yet.
    pub(super) asked: bool,
}

struct Round {
    next: usize,
    replaced: usize,
}

/// The new worker of a slot being replaced.
pub(super) struct Incoming {
    child: Option<Child>,
    link: UnixStream,
    generation: u32,
    /// How the new worker ended, before it served.
    new_ended: Option<ExitStatus>,
    /// How the old worker ended, before the new one served.
    old_ended: Option<ExitStatus>,
    /// The old worker's word: the upgrade was given up, why.
    given_up: Option<String>,
    /// When to conclude without the other half of the story.
    verdict_by: Option<Instant>,
}

impl Upgrades {
    pub(super) fn new(known: bool) -> Upgrades {
        Upgrades {
            known,
            round: None,
            leaving: Vec::new(),
        }
    }
}

impl Supervisor {
    /// SIGUSR2: a round begins, unless one is under way or the workers are stopping.
    pub(super) fn begin_round(&mut self, watch: &mut dyn Watch) {
        let stopping = self.is_stopping();
        let Some(upgrades) = &mut self.upgrades else {
            return;
        };
        if stopping {
            info!("received SIGUSR2 while stopping: no live upgrade");
        } else if !upgrades.known {
            warn!("received SIGUSR2: the path this server was started from is unknown; no live upgrade");
        } else if let Some(round) = &upgrades.round {
            let at = round.next.saturating_sub(1);
            info!("received SIGUSR2: a live upgrade is already under way (worker {at})");
        } else {
            info!(
                "received SIGUSR2: live upgrade of {} workers begins, one at a time, to {}",
                self.slots.len(),
                self.exe.display()
            );
            upgrades.round = Some(Round {
                next: 0,
                replaced: 0,
            });
            self.next_in_round(watch);
        }
    }

    /// Ends the round (a stop signal): no further worker is replaced.
    pub(super) fn end_round(&mut self) {
        if let Some(upgrades) = &mut self.upgrades {
            upgrades.round = None;
        }
    }

    /// Replaces the next worker of the round that runs and is ready, or ends the round.
    fn next_in_round(&mut self, watch: &mut dyn Watch) {
        let Some(round) = self.upgrades.as_mut().and_then(|u| u.round.as_mut()) else {
            return;
        };
        let from = round.next;
        let replaced = round.replaced;
        let next = (from..self.slots.len()).find(|&i| {
            let slot = &self.slots[i];
            slot.child.is_some() && slot.ready && slot.incoming.is_none()
        });
        let Some(index) = next else {
            info!(
                "live upgrade: {replaced} of {} workers replaced; they run {}",
                self.slots.len(),
                self.exe.display()
            );
            self.end_round();
            return;
        };
        round.next = index + 1;
        if let Err(reason) = self.replace(index) {
            self.round_failed(index, &reason, false, watch);
        }
    }

    /// Starts the new worker for `index` and gives both workers the channel.
    fn replace(&mut self, index: usize) -> Result<(), String> {
        let exe = self.exe.display().to_string();
        let (old_end, new_end) =
            UnixStream::pair().map_err(|e| format!("no channel: {}", describe(&e)))?;
        let (mut child, link, generation) = self
            .launch(index, &[(TAKEOVER_ENV, "1")])
            .map_err(|e| format!("cannot start the new binary: {exe}: {}", describe(&e)))?;
        let given = give(&link, CHANNEL, new_end.as_fd())
            .map_err(|e| format!("cannot reach the new worker: {}", describe(&e)))
            .and_then(|()| {
                let old = self.slots[index].stdin.as_ref().ok_or("no link to it")?;
                give(old, UPGRADE, old_end.as_fd())
                    .map_err(|e| format!("cannot reach worker {index}: {}", describe(&e)))
            });
        if let Err(why) = given {
            // Nothing was handed over: the new worker ends (most likely it has: a broken
            // link is its exit); its last line is ignored.
            return Err(match exited_soon(&mut child) {
                Some(status) => format!("the new binary {} before taking over", Ended(status)),
                None => why,
            });
        }
        self.slots[index].incoming = Some(Incoming {
            child: Some(child),
            link,
            generation,
            new_ended: None,
            old_ended: None,
            given_up: None,
            verdict_by: None,
        });
        Ok(())
    }

    /// A line from a process that is not the slot's running worker: the new worker's first
    /// line says that it serves.
    pub(super) fn other_line(
        &mut self,
        index: usize,
        generation: u32,
        line: &str,
        watch: &mut dyn Watch,
    ) {
        let slot = &mut self.slots[index];
        let Some(incoming) = slot.incoming.take_if(|i| i.generation == generation) else {
            // An old worker's line: what its kept peers did since the handover, or a report
            // from before it (the new worker carries those counts on: `watch` drops it).
            let leaving = self.upgrades.iter_mut().flat_map(|u| &mut u.leaving);
            for old in leaving.filter(|o| (o.slot, o.generation) == (index, generation)) {
                old.asked = false;
            }
            watch.old_line(index, generation, line);
            return;
        };
        let Some(child) = incoming.child else {
            return;
        };
        let pid = child.id();
        if let Some(signal) = self.stopped_by {
            send_signal(&child, signal);
        }
        let old_link = slot.stdin.take();
        if let Some(old) = slot.child.replace(child) {
            if let Some(upgrades) = &mut self.upgrades {
                upgrades.leaving.push(Leaving {
                    slot: index,
                    generation: slot.generation,
                    child: old,
                    link: old_link,
                    asked: slot.asked,
                });
            }
        } else if let Some(status) = incoming.old_ended.filter(|s| !s.success()) {
            warn!(
                "worker {index}'s old process {} as it handed over",
                Ended(status)
            );
        }
        slot.stdin = Some(incoming.link);
        slot.generation = generation;
        slot.started = Instant::now();
        slot.ready = true;
        slot.asked = false;
        slot.backoff = FIRST_BACKOFF;
        info!("live upgrade: worker {index} runs the new binary (pid {pid})");
        watch.line(index, generation, line);
        if let Some(round) = self.upgrades.as_mut().and_then(|u| u.round.as_mut()) {
            round.replaced += 1;
        }
        self.next_in_round(watch);
    }

    /// A process that is not the slot's running worker ended: the new worker before it
    /// served, or an old worker that handed over.
    pub(super) fn other_ended(&mut self, index: usize, generation: u32, watch: &mut dyn Watch) {
        if let Some(upgrades) = &mut self.upgrades {
            if let Some(at) = upgrades
                .leaving
                .iter()
                .position(|o| (o.slot, o.generation) == (index, generation))
            {
                let mut old = upgrades.leaving.swap_remove(at).child;
                match old.wait() {
                    Ok(status) if !status.success() => {
                        warn!(
                            "worker {index}'s old process {} after handing over",
                            Ended(status)
                        );
                    }
                    _ => {}
                }
                return;
            }
        }
        let slot = &mut self.slots[index];
        let Some(incoming) = slot
            .incoming
            .as_mut()
            .filter(|i| i.generation == generation)
        else {
            return;
        };
        let status = incoming.child.take().and_then(|mut c| c.wait().ok());
        let status = status.unwrap_or_else(super::failed_status);
        incoming.new_ended = Some(status);
        incoming
            .verdict_by
            .get_or_insert(Instant::now() + VERDICT_WAIT);
        self.conclude(index, false, watch);
    }

    /// The running worker of a slot being replaced ended before the new one served: it
    /// handed over and exited (the new one's first line is on its way), or it died.
    pub(super) fn old_ended_mid_upgrade(&mut self, index: usize, watch: &mut dyn Watch) {
        let status = self.reap(index);
        if let Some(incoming) = &mut self.slots[index].incoming {
            incoming.old_ended = Some(status);
        }
        self.conclude(index, false, watch);
    }

    /// The old worker said that it gave the upgrade up, and why.
    pub(super) fn old_gave_up(&mut self, index: usize, reason: String, watch: &mut dyn Watch) {
        if let Some(incoming) = &mut self.slots[index].incoming {
            incoming.given_up = Some(reason);
            incoming
                .verdict_by
                .get_or_insert(Instant::now() + VERDICT_WAIT);
        }
        self.conclude(index, false, watch);
    }

    /// Concludes the replacement of `index` when its story is told: the new worker ended
    /// before it served, and the old one said why, ended too, or had `VERDICT_WAIT` to say
    /// it; or `late` (past the verdict time), ending a new worker that has not exited.
    fn conclude(&mut self, index: usize, late: bool, watch: &mut dyn Watch) {
        let Some(incoming) = &mut self.slots[index].incoming else {
            return;
        };
        let old_told = incoming.given_up.is_some() || incoming.old_ended.is_some();
        let ready = match incoming.new_ended {
            Some(_) => old_told || late,
            None => late && incoming.given_up.is_some(),
        };
        if !ready {
            return;
        }
        let Some(mut incoming) = self.slots[index].incoming.take() else {
            return;
        };
        let new_status = match incoming.child.take() {
            // The old worker serves on and has told the new one to go: end it.
            Some(mut child) => {
                let _ = child.kill();
                child.wait().unwrap_or_else(|_| super::failed_status())
            }
            None => incoming.new_ended.unwrap_or_else(super::failed_status),
        };
        let counted = incoming.given_up.is_some();
        let reason = match (incoming.given_up, incoming.old_ended) {
            // The old worker knows the channel closed; how the new one ended is known here.
            (Some(reason), _) if incoming.new_ended.is_some() => {
                format!("{reason} (the new worker {})", Ended(new_status))
            }
            (Some(reason), _) => reason,
            (None, Some(old)) => format!("the worker {} during the upgrade", Ended(old)),
            (None, None) => format!("the new worker {} before taking over", Ended(new_status)),
        };
        self.round_failed(index, &reason, counted, watch);
        // Both are gone: the slot's worker died, and is started again as any other.
        if let Some(old) = incoming.old_ended {
            self.after_end(index, old, watch);
        }
    }

    /// One line: worker `index`'s upgrade was given up (`counted` by the worker itself), and
    /// the round stops there.
    fn round_failed(&mut self, index: usize, reason: &str, counted: bool, watch: &mut dyn Watch) {
        if !counted {
            watch.upgrade_failed_here();
        }
        let last = self.slots.len().saturating_sub(1);
        let others = match last.saturating_sub(index) {
            0 => String::new(),
            1 => format!("; worker {last} keeps its own too"),
            _ => format!("; workers {} to {last} keep theirs too", index + 1),
        };
        warn!(
            "live upgrade of worker {index} given up: {reason}; it serves on with the binary it \
             had{others}; a later SIGUSR2 may try again"
        );
        self.end_round();
    }

    /// Concludes the replacements whose verdict time has come.
    pub(super) fn upgrade_deadlines(&mut self, now: Instant, watch: &mut dyn Watch) {
        for index in 0..self.slots.len() {
            let due = self.slots[index]
                .incoming
                .as_ref()
                .and_then(|i| i.verdict_by)
                .is_some_and(|at| at <= now);
            if due {
                self.conclude(index, true, watch);
            }
        }
    }

    /// The earliest verdict time, for the parent's sleep.
    pub(super) fn next_upgrade_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.incoming.as_ref().and_then(|i| i.verdict_by))
            .min()
    }
}

/// How `child` ended, if it ends within a moment; else it is ended (and reaped).
fn exited_soon(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Sends `byte` on a worker's link with `fd` beside it (SCM_RIGHTS).
fn give(link: &UnixStream, byte: u8, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptor"));
    }
    let bytes = [byte];
    loop {
        let iov = [std::io::IoSlice::new(&bytes)];
        match sendmsg(link, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(std::io::ErrorKind::WriteZero.into()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
