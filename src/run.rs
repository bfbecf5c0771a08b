//! `sluice run --config FILE`: ports from the configuration, pinned workers,
//! the control thread; until SIGINT or SIGTERM.
//!
//! Everything is checked before anything starts: a bad file, a missing
//! interface or a port that cannot open ends the command with a message
//! naming the problem, and nothing is left half-configured.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::config::{Backend, Config, ConfigError};
use crate::control::{ControlServer, Dataplane};
use crate::port::Port;
use crate::service::Generation;
use crate::wire::MacAddr;
use crate::worker::WorkerConfig;

/// Why `sluice run` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("interface {name:?}: {message}")]
    Interface { name: String, message: String },
    #[error("this sluice was built without DPDK; rebuild with `cargo build --release --features dpdk` or set dataplane.backend = \"afpacket\"")]
    NoDpdk,
    #[error("{0}")]
    Port(String),
    #[error("{0}")]
    Control(String),
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
}

impl RunError {
    /// An interface that could not be opened or queried, with why.
    fn on(name: &str, e: impl std::fmt::Display) -> RunError {
        RunError::Interface {
            name: name.to_string(),
            message: e.to_string(),
        }
    }
}

/// Runs until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<(), RunError> {
    // Start-up phases are logged with the time since this point, so a
    // restart's cost can be read off the log (scripts/bench_restart.sh).
    let started = Instant::now();
    tracing::info!("starting");
    let mut config = Config::load(path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(RunError::Signal)?;
    }
    let workers = config.dataplane.workers.max(1);
    match config.dataplane.backend {
        Backend::Afpacket => {
            use crate::port::afpacket::RingConfig;
            for i in config.interface.iter_mut() {
                if i.mac.is_none() {
                    i.mac = Some(interface_mac(&i.name)?);
                }
            }
            let names: Vec<&str> = config.interface.iter().map(|i| i.name.as_str()).collect();
            let roles = config.interface_roles();
            let ports = open_afpacket_ports(&names, &roles, workers, RingConfig::default())?;
            ports_open(started);
            serve(&config, path, ports, &stop)
        }
        Backend::Dpdk => run_dpdk(&mut config, path, workers, &stop, started),
        Backend::Mem => {
            // No wire: a data plane that never sees a packet, for trying the
            // control plane (config, socket, ctl) without privileges.
            let ports = (0..workers)
                .map(|_| {
                    config
                        .interface
                        .iter()
                        .map(|_| crate::port::mem::QueuePort::new(1024).0)
                        .collect()
                })
                .collect();
            serve(&config, path, ports, &stop)
        }
    }
}

#[cfg(feature = "dpdk")]
fn run_dpdk(
    config: &mut Config,
    path: &Path,
    workers: usize,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> Result<(), RunError> {
    use crate::port::dpdk::{DeviceConfig, DpdkDevice, Eal};
    let eal = Eal::init(&config.dataplane.eal_args).map_err(|e| RunError::Port(e.to_string()))?;
    tracing::info!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "DPDK EAL initialised"
    );
    use crate::port::dpdk::{RssConfig, RssKey};
    let roles = config.interface_roles();
    // Devices live as long as the run: dropping one detaches it.
    let mut devices = Vec::new();
    for (i, role) in config.interface.iter_mut().zip(roles) {
        let side = client_side(&i.name, role, workers, "the NIC");
        let dev_cfg = DeviceConfig {
            queues: workers as u16,
            rss: RssConfig {
                key: RssKey::Owner(side),
                ..RssConfig::default()
            },
            ..DeviceConfig::default()
        };
        let d = DpdkDevice::open(&eal, &i.name, &dev_cfg).map_err(|e| RunError::on(&i.name, e))?;
        if i.mac.is_none() {
            let m = d.mac_address().map_err(|e| RunError::on(&i.name, e))?;
            i.mac = Some(MacAddr(m));
        }
        devices.push(d);
    }
    let mut ports = Vec::with_capacity(workers);
    for w in 0..workers {
        let mut mine = Vec::new();
        for (d, i) in devices.iter().zip(&config.interface) {
            mine.push(d.port(w as u16).map_err(|e| RunError::on(&i.name, e))?);
        }
        ports.push(mine);
    }
    ports_open(started);
    let r = serve(config, path, ports, stop);
    drop(devices);
    r
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(
    _: &mut Config,
    _: &Path,
    _: usize,
    _: &Arc<AtomicBool>,
    _: Instant,
) -> Result<(), RunError> {
    Err(RunError::NoDpdk)
}

/// Which side of a packet names its flow's client on an interface of this
/// role, for steering it to the flow's owner (`steerer`: who steers, for
/// the warning an interface carrying both sides gets with several
/// workers).
fn client_side(
    name: &str,
    role: crate::control::config::InterfaceRole,
    workers: usize,
    steerer: &str,
) -> crate::rss::ClientSide {
    use crate::control::config::InterfaceRole;
    use crate::rss::ClientSide;
    match role {
        InterfaceRole::Client => ClientSide::Source,
        InterfaceRole::Backend => ClientSide::Destination,
        InterfaceRole::Both => {
            if workers > 1 {
                tracing::warn!(
                    interface = %name,
                    "interface carries clients' packets and backends' replies: {steerer} \
                     steers clients' packets to their flow's owner, replies cross the \
                     handoff ring (set role = \"client\" or \"backend\" on a one-sided \
                     interface)"
                );
            }
            ClientSide::Source
        }
    }
}

fn ports_open(started: Instant) {
    tracing::info!(ms = started.elapsed().as_secs_f64() * 1e3, "ports open");
}

/// Opens every worker's share of every interface, all at once: setting up
/// a ring waits for an RCU grace period in the kernel (10-15 ms here), and
/// opened one after the other those waits added up at every start. The
/// sockets belong to this process's network namespace whichever thread
/// opens them. Returns `ports[worker][interface]`.
///
/// With several workers each interface's sockets join a fanout group whose
/// program computes the flow's owner from the client side its role names
/// (`crate::port::afpacket::fanout`), one after the other in worker order
/// once all are open.
fn open_afpacket_ports(
    names: &[&str],
    roles: &[crate::control::config::InterfaceRole],
    workers: usize,
    ring: crate::port::afpacket::RingConfig,
) -> Result<Vec<Vec<crate::port::afpacket::AfPacketPort>>, RunError> {
    use crate::port::afpacket::fanout::ClientSide;
    use crate::port::afpacket::{AfPacketPort, FanoutMode};
    let sides: Vec<ClientSide> = names
        .iter()
        .zip(roles)
        .map(|(name, &role)| client_side(name, role, workers, "the kernel"))
        .collect();
    let sides = &sides;
    // Sockets a service manager kept across a restart (notify.rs): each
    // is taken back by the same worker on the same interface; the rest
    // (another worker count, an interface gone from the configuration)
    // are closed and dropped from the store before any new socket joins a
    // fanout group.
    let mut kept: Vec<(String, std::os::fd::OwnedFd)> = crate::notify::take_listen_fds();
    let mut taken: Vec<Vec<Option<(String, std::os::fd::OwnedFd)>>> = (0..workers)
        .map(|w| {
            names
                .iter()
                .map(|name| {
                    let prefix = crate::notify::fd_name_prefix(name, w as u32, workers as u32);
                    let i = kept.iter().position(|(n, _)| n.starts_with(&prefix))?;
                    Some(kept.swap_remove(i))
                })
                .collect()
        })
        .collect();
    for (name, fd) in kept {
        tracing::info!(
            name,
            "a kept socket matches no port of this configuration: closed"
        );
        crate::notify::remove_fd(&name);
        drop(fd);
    }
    let opened: Vec<Vec<Result<(AfPacketPort, bool), RunError>>> = std::thread::scope(|s| {
        let handles: Vec<Vec<_>> = taken
            .iter_mut()
            .enumerate()
            .map(|(w, mine)| {
                names
                    .iter()
                    .zip(sides)
                    .zip(mine.iter_mut())
                    .map(|((&name, &side), kept)| {
                        let ring = crate::port::afpacket::RingConfig {
                            fanout: FanoutMode::Owner(side),
                            ..ring
                        };
                        let kept = kept.take();
                        s.spawn(move || {
                            if let Some((stored, fd)) = kept {
                                match AfPacketPort::adopt(fd, name, w as u32, workers as u32, ring)
                                {
                                    Ok(p) => return Ok((p, true)),
                                    Err(e) => {
                                        tracing::warn!(interface = name, worker = w, error = %e,
                                            "the kept socket cannot be taken back; opening a new one");
                                        crate::notify::remove_fd(&stored);
                                    }
                                }
                            }
                            AfPacketPort::open(name, w as u32, workers as u32, ring)
                                .map(|p| (p, false))
                                .map_err(|e| RunError::on(name, e))
                        })
                    })
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .zip(names)
                    .map(|(h, name)| {
                        h.join().unwrap_or_else(|_| {
                            Err(RunError::on(name, "opening the port panicked"))
                        })
                    })
                    .collect()
            })
            .collect()
    });
    // The first error by worker and interface order, as a sequential open
    // would have reported it; every port opened meanwhile is closed.
    let ports: Vec<Vec<(AfPacketPort, bool)>> = opened
        .into_iter()
        .map(|mine| mine.into_iter().collect())
        .collect::<Result<_, _>>()?;
    if workers > 1 {
        for (i, (name, &side)) in names.iter().zip(sides).enumerate() {
            // A socket taken back is still in its group, with its program.
            for (port, _) in ports.iter().filter(|mine| !mine[i].1).map(|mine| &mine[i]) {
                port.join_owner_fanout(side, workers as u32)
                    .map_err(|e| RunError::on(name, e))?;
            }
            tracing::info!(interface = %name, ?side, "kernel fanout steers each flow to its owner");
        }
    }
    for (port, adopted) in ports.iter().flatten() {
        if !adopted {
            crate::notify::store_fd(&port.store_name(), port.raw_fd());
        }
    }
    Ok(ports
        .into_iter()
        .map(|mine| mine.into_iter().map(|(p, _)| p).collect())
        .collect())
}

/// The MAC address of a kernel interface (in this network namespace).
fn interface_mac(name: &str) -> Result<MacAddr, RunError> {
    let p = format!("/sys/class/net/{name}/address");
    let text = std::fs::read_to_string(&p).map_err(|e| RunError::Interface {
        name: name.to_string(),
        message: format!(
            "cannot read {p} ({e}): does the interface exist in this network namespace?"
        ),
    })?;
    text.trim().parse().map_err(|_| RunError::Interface {
        name: name.to_string(),
        message: format!("{p} holds {:?}, not a MAC address", text.trim()),
    })
}

fn serve<P>(
    config: &Config,
    path: &Path,
    ports: Vec<Vec<P>>,
    stop: &Arc<AtomicBool>,
) -> Result<(), RunError>
where
    P: Port + Send + 'static,
{
    let n = ports.len() as u32;
    let timeouts = config.timeouts()?;
    let cores = config.dataplane.cores.clone();
    let workers = ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = WorkerConfig::new(i as u32, n);
            c.core = cores.as_ref().and_then(|cs| cs.get(i).copied());
            c.flow_capacity = config.dataplane.flow_capacity;
            c.timeouts = timeouts;
            c.idle = config.dataplane.idle.policy();
            c.wait_for_configuration = true;
            (c, p)
        })
        .collect();
    let dp: Dataplane<P::Buf> = Dataplane::start(workers, Generation::empty());
    let handle = ControlServer::spawn(config, Some(path.to_path_buf()), dp)
        .map_err(|e| RunError::Control(e.to_string()))?;
    tracing::info!(workers = n, socket = %handle.socket().display(), "sluice running");
    // Every worker runs the configuration and the socket answers.
    crate::notify::ready(&format!("forwarding, {n} workers"));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping");
    crate::notify::stopping();
    if let Some(dp) = handle.shutdown() {
        dp.stop();
    }
    Ok(())
}
