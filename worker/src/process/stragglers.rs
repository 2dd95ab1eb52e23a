//! Stragglers: processes a step started that outlive it after leaving its process group
//! (`setsid sleep 300 &`, a daemon that double-forks). Killing the step's group cannot reach
//! them, and they keep its output pipes open.
//!
//! The scheme (no cgroups: they are not delegated to an unprivileged engine, and not on every
//! machine): every attempt's environment carries a tag, `SLUICE_ATTEMPT_TAG`, that its
//! descendants inherit; and an engine that calls [`adopt_orphans`] becomes the child
//! subreaper of everything it starts (`PR_SET_CHILD_SUBREAPER`), so that a descendant whose
//! parent exits is re-parented to the engine rather than to init. When an attempt's process
//! exits, [`sweep`] reads the engine's children (`/proc/self/task/*/children`): any child that
//! is not an attempt's own process is an adopted straggler, killed (with its process group)
//! when its tag is that of an attempt that has ended, or, without a tag (it cleared its
//! environment), when it started before every attempt still running. Adopted children that
//! exited are reaped here too. Without the subreaper (a library user that did not opt in),
//! the sweep looks for the tag through all of `/proc`.
//!
//! The registry of attempt processes is what keeps the sweep from touching anything else the
//! engine runs: a process is spawned and registered under one lock, and it leaves the
//! registry only once tokio has reaped it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The environment variable that tags an attempt's processes.
pub(crate) const TAG_VAR: &str = "SLUICE_ATTEMPT_TAG";

static ADOPTING: AtomicBool = AtomicBool::new(false);
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
static LEADERS: Mutex<Option<HashMap<u32, Leader>>> = Mutex::new(None);

/// An attempt's own process, while it runs.
struct Leader {
    tag: String,
    /// Its start time (clock ticks since boot).
    start: u64,
}

/// Makes this process the subreaper of the processes its attempts start. Call it once, early,
/// in a program that runs attempts (the `sluice` binary does); it is the cheap and complete way
/// to find stragglers.
pub fn adopt_orphans() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("cannot become a subreaper: {e}"))?;
    ADOPTING.store(true, Ordering::SeqCst);
    Ok(())
}

/// A new tag for one attempt.
pub(crate) fn new_tag() -> String {
    format!("{}.{}", std::process::id(), NEXT_TAG.fetch_add(1, Ordering::Relaxed))
}

/// Spawns an attempt's process and registers it, under the registry's lock (so that no sweep
/// can mistake it for an adopted child between the two).
pub(crate) fn spawn(cmd: &mut tokio::process::Command, tag: &str) -> std::io::Result<tokio::process::Child> {
    let mut leaders = LEADERS.lock().unwrap_or_else(|p| p.into_inner());
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        let start = super::process_start_time(pid).unwrap_or(0);
        leaders.get_or_insert_with(HashMap::new).insert(pid, Leader { tag: tag.to_string(), start });
    }
    Ok(child)
}

/// The attempt's process was reaped: it is no longer in the registry.
pub(crate) fn finished(pid: u32) {
    let mut leaders = LEADERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = leaders.as_mut() {
        map.remove(&pid);
    }
}

/// Kills the stragglers of attempts that have ended and reaps adopted children that exited.
/// Returns how many processes it killed.
pub(crate) fn sweep() -> usize {
    let leaders = LEADERS.lock().unwrap_or_else(|p| p.into_inner());
    let empty = HashMap::new();
    let leaders = leaders.as_ref().unwrap_or(&empty);
    if ADOPTING.load(Ordering::SeqCst) { sweep_adopted(leaders) } else { sweep_tagged(leaders) }
}

fn sweep_adopted(leaders: &HashMap<u32, Leader>) -> usize {
    let oldest_running = leaders.values().map(|l| l.start).min().unwrap_or(u64::MAX);
    let mut killed = 0;
    for pid in children() {
        if leaders.contains_key(&pid) {
            continue;
        }
        let Some(stat) = Stat::read(pid) else { continue };
        if stat.state == 'Z' {
            let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
            continue;
        }
        let ended = match tag_of(pid) {
            Some(tag) => !leaders.values().any(|l| l.tag == tag),
            None => stat.start < oldest_running,
        };
        if ended {
            stop(pid, stat.pgrp, leaders);
            killed += 1;
        }
    }
    killed
}

fn sweep_tagged(leaders: &HashMap<u32, Leader>) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let me = std::process::id();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me || leaders.contains_key(&pid) {
            continue;
        }
        let Some(tag) = tag_of(pid) else { continue };
        if !tag.starts_with(&format!("{me}.")) || leaders.values().any(|l| l.tag == tag) {
            continue;
        }
        if let Some(stat) = Stat::read(pid).filter(|s| s.state != 'Z') {
            stop(pid, stat.pgrp, leaders);
            killed += 1;
        }
    }
    killed
}

/// SIGKILL to a straggler and to its process group (unless that is a running attempt's).
fn stop(pid: u32, pgrp: u32, leaders: &HashMap<u32, Leader>) {
    tracing::debug!(pid, pgrp, "killing a process that outlived its attempt");
    if pgrp > 1 && !leaders.contains_key(&pgrp) && pgrp != std::process::id() {
        let _ = killpg(Pid::from_raw(pgrp as i32), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// This process's children, over all its threads (an orphan is re-parented to one of them).
fn children() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The attempt tag in a process's environment, if it has one.
fn tag_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TAG_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The fields of `/proc/PID/stat` the sweep needs.
struct Stat {
    state: char,
    pgrp: u32,
    start: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name in parentheses: state, ppid, pgrp, ... starttime (22nd).
        let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
        Some(Stat {
            state: fields.first()?.chars().next()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }
}
