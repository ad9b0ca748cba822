//! A persistent thread pool for the CPU backend's products, in the manner of ggml's threadpool:
//! the workers spin on an epoch counter for a while after each job, so the next product (a decode
//! step runs a few hundred, tens of microseconds each) starts without waking a sleeping thread,
//! and park on a condition variable only when no job came for a while. The thread that submits a
//! job runs it too.
//!
//! (rayon was tried first: its workers fall asleep between products and waking them took longer
//! than a small product, so two threads decoded slower than one.)

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(500);

/// A job: every thread calls it once; it shares its work out itself (e.g. an atomic counter).
type Job = dyn Fn() + Sync;

struct Shared {
    /// Bumped for every job.
    epoch: AtomicU64,
    /// The current job, lifetime erased: valid until `pending` drops to 0 (see [`Pool::run`]).
    job: Mutex<Option<*const Job>>,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// Workers parked on `wake`.
    parked: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
    /// Set when a job panicked on a worker.
    panicked: AtomicBool,
}

// SAFETY: the raw job pointer is only dereferenced while `Pool::run` keeps the job alive, and the
// job is `Sync`.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// `threads - 1` workers plus the submitting thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} workers)", self.workers.len())
    }
}

impl Pool {
    /// A pool computing with `threads` threads in all (the caller of [`Pool::run`] included).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("chord-cpu-{i}"))
                .spawn(move || worker(&s));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    // Stop the ones already started.
                    drop(Pool { shared, workers });
                    return Err(e);
                }
            }
        }
        Ok(Pool { shared, workers })
    }

    /// Runs `job` on every thread of the pool (this one included) and returns when all are done.
    /// Returns `false` if it panicked on a worker.
    pub fn run<'a>(&self, job: &(dyn Fn() + Sync + 'a)) -> bool {
        let s = &self.shared;
        if self.workers.is_empty() {
            job();
            return true;
        }
        // SAFETY (lifetime erasure): the pointer is cleared, and every worker has finished with
        // it, before this function returns, so it never outlives `job`.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn() + Sync + 'a), &'static Job>(job) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
        s.pending.store(self.workers.len(), Ordering::Release);
        s.epoch.fetch_add(1, Ordering::AcqRel);
        if *s.parked.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        // A panic here must still wait for the workers before `job` goes away.
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        while s.pending.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        !s.panicked.swap(false, Ordering::AcqRel)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        {
            let _g = self.shared.parked.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Spin for the next job, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let mut epoch = s.epoch.load(Ordering::Acquire);
        while epoch == seen {
            spins = spins.wrapping_add(1);
            // The clock is read now and then only: reading it is dearer than a spin.
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut parked = s.parked.lock().unwrap_or_else(|e| e.into_inner());
                *parked += 1;
                while s.epoch.load(Ordering::Acquire) == seen {
                    parked = s.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
                }
                *parked -= 1;
            } else {
                std::hint::spin_loop();
            }
            epoch = s.epoch.load(Ordering::Acquire);
        }
        seen = epoch;
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            // SAFETY: see `Pool::run`: the job lives until `pending` reaches 0.
            let job = unsafe { &*job };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_every_job() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            for round in 0..200 {
                let count = AtomicUsize::new(0);
                assert!(pool.run(&|| {
                    count.fetch_add(1, Ordering::Relaxed);
                }));
                assert_eq!(count.load(Ordering::Relaxed), threads, "round {round}");
                if round % 50 == 0 {
                    // Let the workers park, then wake them.
                    std::thread::sleep(SPIN * 3);
                }
            }
        }
    }

    #[test]
    fn a_panicking_worker_is_reported() {
        let pool = Pool::new(2).unwrap();
        let main = std::thread::current().id();
        let ok = pool.run(&|| {
            if std::thread::current().id() != main {
                panic!("worker");
            }
        });
        assert!(!ok);
        // The pool still works.
        assert!(pool.run(&|| {}));
    }
}
