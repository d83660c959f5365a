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

/// The CPU for each of `workers` workers, when `pin` asks for binding and they are one per CPU.
pub(crate) fn worker_cpus(pin: bool, workers: usize) -> Vec<Option<usize>> {
    #[cfg(target_os = "linux")]
    if pin {
        let allowed: Vec<usize> = match sched_getaffinity(None) {
            Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
            Err(e) => {
                tracing::warn!(target: "portcullis::gateway", error = %e, "CPUs unknown; workers not bound");
                Vec::new()
            }
        };
        if allowed.len() == workers && workers > 1 {
            return allowed.into_iter().map(Some).collect();
        }
        if !allowed.is_empty() && workers > 1 {
            tracing::info!(target: "portcullis::gateway", workers, cpus = allowed.len(), "workers not bound to CPUs: there is not one worker per CPU");
        }
    }
    let _ = pin;
    vec![None; workers]
}

/// What the calling thread could run on before `bind`: threads it starts later (a runtime's
/// blocking pool: state-file commits, name lookups) are given it back rather than sharing
/// the worker's one CPU.
#[derive(Clone, Copy)]
pub(crate) struct Before(#[cfg(target_os = "linux")] CpuSet);

impl Before {
    /// Gives the calling thread back the CPUs its binder could use.
    pub(crate) fn restore(&self) {
        #[cfg(target_os = "linux")]
        if let Err(e) = sched_setaffinity(None, &self.0) {
            tracing::warn!(target: "portcullis::gateway", error = %e, "a helper thread stays on its worker's CPU");
        }
    }
}

/// Binds the calling thread to `cpu`. A refusal (a sandbox that forbids it) is logged, and the
/// thread runs unbound (`None`).
pub(crate) fn bind(cpu: usize) -> Option<Before> {
    #[cfg(target_os = "linux")]
    {
        let before = sched_getaffinity(None).ok()?;
        let mut set = CpuSet::new();
        set.set(cpu);
        match sched_setaffinity(None, &set) {
            Ok(()) => Some(Before(before)),
            Err(e) => {
                tracing::warn!(target: "portcullis::gateway", cpu, error = %e, "worker not bound to its CPU");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        None
    }
}
