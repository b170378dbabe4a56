//! Splitting a kernel call over threads: the calling thread and `threads − 1` workers claim
//! the kernel's independent parts (channel or column tiles) one at a time from a shared
//! counter, so a thread that starts late (or is descheduled on a busy machine) simply takes
//! fewer parts instead of holding up the others. The workers are persistent (one rayon pool
//! of `threads − 1` threads per thread count, created on first use): a model makes dozens
//! of split calls per run, and spawning threads for each cost tens of microseconds apiece.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The pools made so far: `(workers, pool)`.
type Pools = Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>>;

/// The pool of `workers` persistent threads, created on first use; `None` when the OS
/// refuses to start threads (the caller then spawns scoped ones).
fn pool(workers: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == workers) {
        return Some(pool.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(move |i| format!("kiln-worker-{}/{workers}", i + 1))
        .build()
        .ok()?;
    let pool = Arc::new(pool);
    pools.push((workers, pool.clone()));
    Some(pool)
}

/// Call `run(first, end)` on consecutive ranges covering `0..parts` exactly once, on up to
/// `threads` threads (the calling one included). Ranges are single parts when split; with
/// one thread (or one part) it is one call `run(0, parts)` on the calling thread.
pub(crate) fn for_each_part(parts: usize, threads: usize, run: impl Fn(usize, usize) + Sync) {
    let threads = threads.clamp(1, parts.max(1));
    if threads == 1 {
        if parts > 0 {
            run(0, parts);
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let worker = || loop {
        // each value is handed out once: the parts are disjoint across threads
        let part = next.fetch_add(1, Ordering::Relaxed);
        if part >= parts {
            break;
        }
        run(part, part + 1);
    };
    match pool(threads - 1) {
        // `in_place_scope` runs the closure here, on the calling thread, and returns once
        // every spawned job has finished, so `run`'s borrows outlive all uses
        Some(pool) => pool.in_place_scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| worker());
            }
            worker();
        }),
        None => std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(worker);
            }
            worker();
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every part is run exactly once, whatever the thread count.
    #[test]
    fn covers_every_part_once() {
        for (parts, threads) in [(0, 3), (1, 4), (7, 1), (7, 2), (7, 3), (64, 16)] {
            let seen = Mutex::new(vec![0u32; parts]);
            for_each_part(parts, threads, |first, end| {
                let mut seen = seen.lock().expect("no thread panics");
                for count in &mut seen[first..end] {
                    *count += 1;
                }
            });
            let seen = seen.into_inner().expect("no thread panics");
            assert!(
                seen.iter().all(|&c| c == 1),
                "{parts} parts, {threads} threads: {seen:?}"
            );
        }
    }
}
