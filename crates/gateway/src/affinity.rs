//! Worker threads bound to CPUs (Linux; elsewhere nothing is bound).
//!
//! With one worker per CPU the process may use (its affinity mask, which a container's cpuset
//! narrows), worker `i` is bound to the `i`-th of those CPUs: each worker owns its connections
//! for their whole life, and a worker that the scheduler moves, or stacks on a core beside its
//! sibling while the other core runs something else, serves all of them late. Otherwise
//! (fewer workers than CPUs, as under a CPU quota, or more) none is bound: which CPUs to leave
//! free is not ours to guess.

#[cfg(target_os = "linux")]
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// A worker's CPU, and the CPUs the process may use: what the threads the worker starts later
/// (its runtime's blocking pool: state-file commits, name lookups) are given back rather than
/// sharing the worker's one CPU.
#[derive(Clone, Copy)]
pub(crate) struct Binding {
    #[cfg(target_os = "linux")]
    cpu: usize,
    #[cfg(target_os = "linux")]
    wide: CpuSet,
}

/// The binding of each of `workers` workers, when `pin` asks for it and they are one per CPU.
pub(crate) fn worker_cpus(pin: bool, workers: usize) -> Vec<Option<Binding>> {
    #[cfg(target_os = "linux")]
    if pin && workers > 1 {
        match sched_getaffinity(None) {
            Ok(wide) => {
                let allowed: Vec<usize> =
                    (0..CpuSet::MAX_CPU).filter(|&c| wide.is_set(c)).collect();
                if allowed.len() == workers {
                    return allowed
                        .into_iter()
                        .map(|cpu| Some(Binding { cpu, wide }))
                        .collect();
                }
                tracing::info!(target: "portcullis::gateway", workers, cpus = allowed.len(), "workers not bound to CPUs: there is not one worker per CPU");
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::gateway", error = %e, "CPUs unknown; workers not bound");
            }
        }
    }
    let _ = pin;
    vec![None; workers]
}

impl Binding {
    /// Binds the calling thread to the worker's CPU. A refusal (a sandbox that forbids it) is
    /// logged, and the thread runs unbound (`false`).
    pub(crate) fn bind(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            let mut set = CpuSet::new();
            set.set(self.cpu);
            if let Err(e) = sched_setaffinity(None, &set) {
                tracing::warn!(target: "portcullis::gateway", cpu = self.cpu, error = %e, "worker not bound to its CPU");
                return false;
            }
            true
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Gives the calling thread back the CPUs the process may use.
    pub(crate) fn restore(&self) {
        #[cfg(target_os = "linux")]
        if let Err(e) = sched_setaffinity(None, &self.wide) {
            tracing::warn!(target: "portcullis::gateway", error = %e, "a helper thread stays on its worker's CPU");
        }
    }
}
