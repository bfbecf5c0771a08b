//! The thread that owns sluice's BIRD: starts it, applies what the control
//! thread wants announced, watches the BGP sessions, restarts BIRD if it
//! dies, and stops it last.
//!
//! It is a thread of its own so a slow or restarting daemon never holds
//! the control loop; the control thread only posts what it wants and reads
//! the status.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::bird::{self, BirdCtl, BirdError};
use super::BgpSettings;
use crate::control::protocol::PeerView;

/// How often the sessions' states are read (one `show protocols`).
const REFRESH: Duration = Duration::from_millis(200);
/// Between two tries after BIRD failed or died.
const RETRY: Duration = Duration::from_secs(1);
/// How long BIRD may take to open its control socket.
const START_LIMIT: Duration = Duration::from_secs(10);

/// What the speaker reports.
#[derive(Clone, Debug, Default)]
pub struct SpeakerStatus {
    /// The daemon: running, starting, or why not.
    pub daemon: String,
    /// The last `want` BIRD applied.
    pub applied: u64,
    /// VIPs BIRD announces (as of `applied`).
    pub announced: BTreeSet<Ipv4Addr>,
    pub prefixes: bool,
    pub peers: Vec<PeerView>,
    /// VIP announcements and withdrawals applied so far.
    pub announcements: u64,
    pub withdrawals: u64,
    /// Failed attempts to talk to BIRD, and BIRD restarts.
    pub errors: u64,
    pub restarts: u64,
}

enum Cmd {
    Want {
        seq: u64,
        vips: BTreeSet<Ipv4Addr>,
        prefixes: bool,
    },
    Stop,
}

/// The running speaker.
pub struct Speaker {
    tx: Sender<Cmd>,
    status: Arc<Mutex<SpeakerStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    /// Checks the configuration with BIRD's parser, starts BIRD (announcing
    /// nothing yet) and returns once its control socket answers.
    pub fn start(s: BgpSettings) -> Result<Speaker, BirdError> {
        std::fs::create_dir_all(&s.runtime_dir)?;
        // BIRD's socket controls what this instance announces: owner only.
        std::fs::set_permissions(&s.runtime_dir, std::fs::Permissions::from_mode(0o700))?;
        let conf = s.runtime_dir.join("bird.conf");
        let sock = s.runtime_dir.join("bird.ctl");
        bird::write_atomic(&conf, &bird::config_text(&s, &BTreeSet::new(), false))?;
        bird::check_config(&s.daemon, &conf)?;
        let status = Arc::new(Mutex::new(SpeakerStatus {
            daemon: "starting".into(),
            ..Default::default()
        }));
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-bgp".into())
            .spawn(move || {
                // BIRD is this thread's child: it dies with the thread.
                let mut run = Run {
                    s,
                    conf,
                    sock,
                    child: None,
                    ctl: None,
                    want: (0, BTreeSet::new(), false),
                    pending: false,
                    status: st,
                    established: HashMap::new(),
                };
                let first = run.start_daemon();
                let ok = first.is_ok();
                let _ = ready_tx.send(first);
                if ok {
                    run.serve(&rx);
                }
                run.shutdown();
            })?;
        match ready_rx.recv_timeout(START_LIMIT + Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Speaker {
                tx,
                status,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(BirdError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "BIRD did not start in time",
            ))),
        }
    }

    /// Announces `vips` (and the peers' prefixes with `prefixes`), nothing
    /// else; `seq` identifies this wish in [`SpeakerStatus::applied`].
    pub fn want(&self, seq: u64, vips: BTreeSet<Ipv4Addr>, prefixes: bool) {
        let _ = self.tx.send(Cmd::Want {
            seq,
            vips,
            prefixes,
        });
    }

    pub fn status(&self) -> SpeakerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops BIRD (it closes its sessions with a Cease) and the thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop_now();
    }
}

struct Run {
    s: BgpSettings,
    conf: PathBuf,
    sock: PathBuf,
    child: Option<Child>,
    ctl: Option<BirdCtl>,
    /// What the control thread wants: (seq, VIPs, prefixes).
    want: (u64, BTreeSet<Ipv4Addr>, bool),
    /// `want` is not applied yet.
    pending: bool,
    status: Arc<Mutex<SpeakerStatus>>,
    /// Which sessions were established at the last look.
    established: HashMap<String, bool>,
}

impl Run {
    fn set_status(&self, f: impl FnOnce(&mut SpeakerStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Starts BIRD with the configuration for what is wanted now.
    fn start_daemon(&mut self) -> Result<(), BirdError> {
        bird::write_atomic(
            &self.conf,
            &bird::config_text(&self.s, &self.want.1, self.want.2),
        )?;
        let _ = std::fs::remove_file(&self.sock);
        let mut child = bird::spawn(&self.s.daemon, &self.conf, &self.sock, self.s.realtime)?;
        if let Some(err) = child.stderr.take() {
            // BIRD's log, in sluice's.
            let _ = std::thread::Builder::new()
                .name("sluice-bird-log".into())
                .spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        tracing::info!(target: "bird", "{line}");
                    }
                });
        }
        let pid = child.id();
        let ctl = bird::wait_ready(&mut child, &self.sock, START_LIMIT);
        self.child = Some(child);
        self.ctl = Some(ctl?);
        tracing::info!(pid, socket = %self.sock.display(), "BGP speaker (BIRD) running");
        self.set_status(|s| s.daemon = format!("running (BIRD pid {pid})"));
        Ok(())
    }

    fn serve(&mut self, rx: &Receiver<Cmd>) {
        let mut next_refresh = Instant::now();
        let mut retry_at: Option<Instant> = None;
        loop {
            let wait = next_refresh.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Cmd::Want {
                    seq,
                    vips,
                    prefixes,
                }) => {
                    self.want = (seq, vips, prefixes);
                    self.pending = true;
                    // Only the newest wish matters.
                    while let Ok(c) = rx.try_recv() {
                        match c {
                            Cmd::Want {
                                seq,
                                vips,
                                prefixes,
                            } => self.want = (seq, vips, prefixes),
                            Cmd::Stop => return,
                        }
                    }
                }
                Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if retry_at.is_some_and(|t| now < t) {
                continue;
            }
            retry_at = None;
            if let Err(e) = self.supervise() {
                tracing::warn!(error = %e, "BGP speaker: BIRD not reachable; retrying");
                self.set_status(|s| {
                    s.errors += 1;
                    s.daemon = format!("retrying: {e}");
                });
                retry_at = Some(now + RETRY);
                continue;
            }
            if self.pending {
                if let Err(e) = self.apply() {
                    tracing::warn!(error = %e, "BGP speaker: announcement change not applied; retrying");
                    self.set_status(|s| s.errors += 1);
                    self.ctl = None;
                    retry_at = Some(now + RETRY);
                    continue;
                }
            }
            if now >= next_refresh {
                if let Err(e) = self.refresh() {
                    tracing::debug!(error = %e, "BGP speaker: session states not read");
                    self.ctl = None;
                }
                next_refresh = now + REFRESH;
            }
        }
    }

    /// Makes sure BIRD runs and answers: restarts it if it died, reconnects
    /// if the socket broke.
    fn supervise(&mut self) -> Result<(), BirdError> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                tracing::error!(%status, "BGP speaker: BIRD exited; restarting it");
                self.child = None;
                self.ctl = None;
                self.established.clear();
                self.set_status(|s| {
                    s.restarts += 1;
                    s.daemon = format!("restarting (BIRD exited: {status})");
                    s.peers.clear();
                });
            }
        }
        if self.child.is_none() {
            // The file it starts from holds what is wanted now.
            self.start_daemon()?;
            self.pending = true;
        }
        if self.ctl.is_none() {
            self.ctl = Some(BirdCtl::connect(&self.sock, Duration::from_secs(5))?);
        }
        Ok(())
    }

    /// Writes the configuration for `want` and has BIRD apply it: only the
    /// static routes change, so the sessions stay up and the routers get
    /// an UPDATE at once.
    fn apply(&mut self) -> Result<(), BirdError> {
        let (seq, vips, prefixes) = self.want.clone();
        bird::write_atomic(&self.conf, &bird::config_text(&self.s, &vips, prefixes))?;
        let ctl = self.ctl.as_mut().ok_or(BirdError::Closed)?;
        ctl.call("configure")?;
        self.pending = false;
        let before = self.status().announced;
        let up: Vec<Ipv4Addr> = vips.difference(&before).copied().collect();
        let down: Vec<Ipv4Addr> = before.difference(&vips).copied().collect();
        if !up.is_empty() || !down.is_empty() {
            tracing::info!(announced = ?up, withdrawn = ?down, return_prefixes = prefixes, "BGP: announcements changed");
        }
        self.set_status(|s| {
            s.applied = seq;
            s.announcements += up.len() as u64;
            s.withdrawals += down.len() as u64;
            s.announced = vips;
            s.prefixes = prefixes;
        });
        Ok(())
    }

    fn status(&self) -> SpeakerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads the sessions' states; logs sessions that came up or went down.
    fn refresh(&mut self) -> Result<(), BirdError> {
        let ctl = self.ctl.as_mut().ok_or(BirdError::Closed)?;
        let rows = bird::protocol_rows(&ctl.call("show protocols")?);
        let mut peers = Vec::with_capacity(self.s.peers.len());
        for p in &self.s.peers {
            let row = rows.iter().find(|r| r.name == p.name);
            let state = row.map_or("unknown".to_string(), |r| {
                if r.proto == "BGP" && !r.bgp_state.is_empty() {
                    r.bgp_state.clone()
                } else {
                    r.state.clone()
                }
            });
            let up = state == "Established";
            let info = row.map(|r| r.info.clone()).unwrap_or_default();
            if self.established.insert(p.name.clone(), up) != Some(up) {
                if up {
                    tracing::info!(peer = %p.name, address = %p.address, "BGP session established");
                } else {
                    tracing::warn!(peer = %p.name, address = %p.address, state = %state, info = %info, "BGP session not established");
                }
            }
            peers.push(PeerView {
                name: p.name.clone(),
                address: p.address,
                state,
                established: up,
                info,
            });
        }
        self.set_status(|s| s.peers = peers);
        Ok(())
    }

    /// Stops BIRD: `down` closes every session with a Cease notification
    /// (the routers drop the routes at once); killed if it lingers.
    fn shutdown(&mut self) {
        if let Some(ctl) = self.ctl.as_mut() {
            let _ = ctl.call("down");
        }
        self.ctl = None;
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            tracing::info!("BGP speaker (BIRD) stopped");
        }
        let _ = std::fs::remove_file(&self.sock);
        self.set_status(|s| {
            s.daemon = "stopped".into();
            s.peers.clear();
        });
    }
}
