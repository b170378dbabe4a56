//! Splitting a kernel call over threads: the calling thread and `threads − 1` scoped ones
//! claim the kernel's independent parts (channel or column tiles) one at a time from a
//! shared counter, so a thread that starts late (or is descheduled on a busy machine) simply
//! takes fewer parts instead of holding up the others.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
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
