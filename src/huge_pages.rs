//! Transparent huge pages: off for the activator's own memory, left as they were for the
//! replicas it starts.
//!
//! The allocator (mimalloc) gives each thread that allocates a heap of its own, carved from one
//! large arena. Where the kernel backs anonymous memory with transparent huge pages (`always` in
//! `/sys/kernel/mm/transparent_hugepage/enabled`, or `madvise` for a region that asks for them),
//! the first block a thread touches in its heap faults in a whole 2 MiB page: about 2 MiB of
//! idle RSS per worker, 80 MiB with 32 workers, for no CPU per request measured
//! (BENCHMARKS.md, section 4). The allocator is built not to ask for them (its `no_thp`
//! feature), and [`disable`] turns them off for the process whatever the system's setting, as
//! Redis's documentation advises for its memory and latency.
//!
//! The flag is the process's (`PR_SET_THP_DISABLE`), and its children inherit it across fork
//! and exec; [`restore_in_child`] gives the process provider's replicas back the flag the
//! activator started with. The one other program the activator may start, a kubeconfig's
//! `exec` credential plugin (run by kube-rs), keeps the activator's: it lives for a moment.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`disable`] turned huge pages off, rather than finding them off already.
static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for this process. The binary calls it before anything has
/// allocated (from `.preinit_array`, ahead of every constructor): it allocates nothing itself.
/// A kernel without the flag (before Linux 3.15) keeps its own setting.
pub fn disable() {
    if let Ok(false) = nix::sys::prctl::get_thp_disable()
        && nix::sys::prctl::set_thp_disable(true).is_ok()
    {
        TURNED_OFF.store(true, Ordering::Relaxed);
    }
}

/// In a child forked to run a replica, before it execs: turns huge pages back on if [`disable`]
/// turned them off, so the replica runs under the system's setting. One system call, and no
/// allocation: safe between fork and exec.
pub(crate) fn restore_in_child() -> std::io::Result<()> {
    if TURNED_OFF.load(Ordering::Relaxed) {
        nix::sys::prctl::set_thp_disable(false)?;
    }
    Ok(())
}
