//! Every process the harness starts is a child registered here, and is stopped by its pid when
//! the run ends: normally, on an error, on a panic (the guard's `Drop`), and on Ctrl-C or
//! SIGTERM (the run's signal handler returns an error, which drops the guard). As a last
//! resort, if the harness itself is SIGKILLed, Linux kills each child with it (PDEATHSIG).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The harness's children, by pid. Cloning shares the registry; the last `Children` dropped
/// does not kill anything: the `ChildGuard` does.
#[derive(Clone, Default)]
pub struct Children {
    live: Arc<Mutex<BTreeMap<u32, Child>>>,
    /// Every pid ever started, for the report (a test checks none is left).
    started: Arc<Mutex<Vec<u32>>>,
}

/// Kills every registered child when dropped.
pub struct ChildGuard {
    pub children: Children,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.children.kill_all();
    }
}

impl Children {
    pub fn guard(&self) -> ChildGuard {
        ChildGuard {
            children: self.clone(),
        }
    }

    /// Starts `command` as a registered child; it dies with the harness.
    pub fn spawn(&self, command: &mut Command) -> std::io::Result<u32> {
        // SAFETY: prctl is async-signal-safe and touches only the new process.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = child.id();
        self.lock().insert(pid, child);
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
        Ok(pid)
    }

    /// SIGKILLs child `pid` and reaps it. Unknown pids are ignored (never a stranger's).
    pub fn kill(&self, pid: u32) {
        let child = self.lock().remove(&pid);
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether child `pid` is still running (false once it exited or was killed).
    pub fn is_running(&self, pid: u32) -> bool {
        let mut live = self.lock();
        match live.get_mut(&pid) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Every pid started so far, running or not.
    pub fn started(&self) -> Vec<u32> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Pids still registered.
    pub fn pids(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    /// SIGKILLs every child by pid and reaps them all.
    pub fn kill_all(&self) {
        let children: Vec<Child> = std::mem::take(&mut *self.lock()).into_values().collect();
        for mut child in children {
            let _ = child.kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Child>> {
        // A panic while holding the lock leaves the map intact: keep using it.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_kills_its_children_by_pid() {
        let children = Children::default();
        let pid = {
            let _guard = children.guard();
            let pid = children
                .spawn(Command::new("sleep").arg("30"))
                .expect("spawn sleep");
            assert!(children.is_running(pid));
            pid
        };
        assert!(children.pids().is_empty());
        // The pid is gone: kill -0 fails.
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
        assert!(!alive, "child {pid} survived its guard");
    }
}
