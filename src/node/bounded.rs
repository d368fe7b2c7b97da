//! Host reads bounded in time (design §5: evidence whose read does not finish in bounded
//! time blocks the VMs it concerns).
//!
//! A `stat` through `/proc/<pid>/fd/<n>` onto a dead NFS mount (a Longhorn RWX volume
//! whose share-manager died with the node) can block forever, and so can opening a FIFO or
//! reading a file on a hung filesystem under the host root. No Linux call can be
//! interrupted from outside once the kernel waits uninterruptibly, so every blocking read
//! runs on a helper thread and the caller waits at most a deadline. A read that misses it
//! becomes [`TimedOut`] evidence naming what it was reading; its thread is abandoned (it
//! ends when the read returns, if ever).
//!
//! Guarantees:
//! - [`run`] and [`run_each`] return within their limits (plus thread start-up), whatever
//!   the work does.
//! - Abandoned threads are bounded: a task whose previous run is still stuck is not
//!   started again (it times out at once, saying since when it is stuck), and no new task
//!   starts while [`MAX_STUCK`] threads are stuck.
//!
//! Assumption: the work only reads; abandoning it mid-way leaves nothing half-done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long host reads may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// The longest one read may take: one file, one directory walk, one process's
    /// descriptors.
    pub read: Duration,
    /// The longest one evidence source may take in total (all processes' descriptors).
    pub source: Duration,
}

impl Default for ScanLimits {
    /// 10 s per read, 60 s per source: far above what a healthy node needs (milliseconds),
    /// well below the agent's pass interval.
    fn default() -> Self {
        ScanLimits {
            read: Duration::from_secs(10),
            source: Duration::from_secs(60),
        }
    }
}

/// At most this many helper threads may be stuck at once; past it, bounded reads fail at
/// once instead of starting another thread.
pub const MAX_STUCK: usize = 32;

/// What a bounded task was doing when its time ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// The task (`open files of pid 4242`, `/host/proc/1/mountinfo`).
    pub task: String,
    /// The last thing it said it was reading, if any.
    pub reading: Option<String>,
    /// How long it was given.
    pub limit: Duration,
    /// Why it was not started, when it was not.
    pub not_started: Option<String>,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.not_started {
            return write!(f, "{}: not read: {why}", self.task);
        }
        write!(
            f,
            "{}: did not finish within {}",
            self.task,
            humantime::format_duration(self.limit)
        )?;
        if let Some(r) = &self.reading {
            write!(f, " (stuck reading {r})")?;
        }
        f.write_str("; a hung filesystem (such as a dead NFS server) can cause this")
    }
}

/// Where a task reports what it is reading, so a timeout can name it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<Option<String>>>);

impl Progress {
    /// Records that the task is now reading `what`.
    pub fn reading(&self, what: impl std::fmt::Display) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(what.to_string());
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// Tasks whose thread was abandoned and has not returned yet: task → (since, reading).
type Stuck = Mutex<HashMap<String, (Instant, Option<String>)>>;

fn stuck() -> &'static Stuck {
    static STUCK: OnceLock<Stuck> = OnceLock::new();
    STUCK.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Threads abandoned and not returned, for tests and metrics.
pub fn stuck_threads() -> usize {
    STUCK_COUNT.load(Ordering::Relaxed)
}

static STUCK_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Why `task` may not start now, if it may not.
fn refuse(task: &str) -> Option<String> {
    let map = stuck().lock().ok()?;
    if let Some((since, reading)) = map.get(task) {
        return Some(format!(
            "an earlier read of it has been stuck for {}{}",
            humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
            reading
                .as_deref()
                .map(|r| format!(" (reading {r})"))
                .unwrap_or_default()
        ));
    }
    if map.len() >= MAX_STUCK {
        return Some(format!(
            "{} earlier host reads are still stuck; no more are started",
            map.len()
        ));
    }
    None
}

/// A helper thread's state shared with its waiter: whether it finished, and whether the
/// waiter gave up on it (then the thread clears its stuck entry when it returns).
#[derive(Default)]
struct Shared {
    done: bool,
    abandoned_as: Option<String>,
}

fn finish(shared: &Mutex<Shared>) {
    if let Ok(mut s) = shared.lock() {
        s.done = true;
        if let Some(task) = s.abandoned_as.take() {
            if let Ok(mut map) = stuck().lock() {
                if map.remove(&task).is_some() {
                    STUCK_COUNT.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Marks the thread abandoned unless it finished meanwhile; returns whether it was.
/// While abandoned and not returned, `task` is not started again.
fn abandon(shared: &Mutex<Shared>, task: &str, reading: Option<String>) -> bool {
    let Ok(mut s) = shared.lock() else {
        return true;
    };
    if s.done {
        return false;
    }
    s.abandoned_as = Some(task.to_string());
    if let Ok(mut map) = stuck().lock() {
        if map
            .insert(task.to_string(), (Instant::now(), reading))
            .is_none()
        {
            STUCK_COUNT.fetch_add(1, Ordering::Relaxed);
        }
    }
    true
}

/// Runs `work` on a helper thread and waits at most `limit` for it.
///
/// `task` names what is read, for the timeout message and for not starting the same read
/// again while an earlier one is stuck. `work` reports finer progress through its
/// [`Progress`].
pub fn run<T, F>(task: &str, limit: Duration, work: F) -> Result<T, TimedOut>
where
    T: Send + 'static,
    F: FnOnce(&Progress) -> T + Send + 'static,
{
    if let Some(why) = refuse(task) {
        return Err(TimedOut {
            task: task.to_string(),
            reading: None,
            limit,
            not_started: Some(why),
        });
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let progress = Progress::default();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let spawned = {
        let progress = progress.clone();
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("vmrecover-read".into())
            .spawn(move || {
                let out = work(&progress);
                let _ = tx.send(out);
                finish(&shared);
            })
    };
    if let Err(e) = spawned {
        return Err(TimedOut {
            task: task.to_string(),
            reading: None,
            limit,
            not_started: Some(format!("cannot start a reader thread: {e}")),
        });
    }
    match rx.recv_timeout(limit) {
        Ok(v) => Ok(v),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let reading = progress.get();
            abandon(&shared, task, reading.clone());
            // Finished right at the deadline: the value is there after all.
            if let Ok(v) = rx.try_recv() {
                return Ok(v);
            }
            Err(TimedOut {
                task: task.to_string(),
                reading,
                limit,
                not_started: None,
            })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(TimedOut {
            task: task.to_string(),
            reading: progress.get(),
            limit,
            not_started: Some("the reader thread failed (panicked)".into()),
        }),
    }
}

/// Runs `work` over `items` in order on helper threads: each item may take at most
/// `limits.read`, all of them at most `limits.source`. An item that misses its deadline is
/// `Err(TimedOut)` and the rest continue on a fresh thread; once [`MAX_STUCK`] threads are
/// stuck, or the source deadline passes, the remaining items are `Err` without being read.
///
/// `task_of(item)` names an item (as in [`run`]). The answer has one entry per item, in
/// order.
pub fn run_each<I, T, N, F>(
    items: Vec<I>,
    limits: ScanLimits,
    task_of: N,
    work: F,
) -> Vec<Result<T, TimedOut>>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    N: Fn(&I) -> String,
    F: Fn(&I, &Progress) -> T + Send + Sync + 'static,
{
    let n = items.len();
    let names: Vec<String> = items.iter().map(&task_of).collect();
    let items = Arc::new(items);
    let work = Arc::new(work);
    let mut out: Vec<Option<Result<T, TimedOut>>> = (0..n).map(|_| None).collect();
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        // Items whose earlier read is still stuck are not read again.
        if let Some(why) = refuse(&names[next]) {
            out[next] = Some(Err(TimedOut {
                task: names[next].clone(),
                reading: None,
                limit: limits.read,
                not_started: Some(why),
            }));
            next += 1;
            continue;
        }
        let (tx, rx) = mpsc::channel::<(usize, T)>();
        let progress = Progress::default();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let spawned = {
            let (items, work, progress, shared) = (
                Arc::clone(&items),
                Arc::clone(&work),
                progress.clone(),
                Arc::clone(&shared),
            );
            let from = next;
            std::thread::Builder::new()
                .name("vmrecover-read".into())
                .spawn(move || {
                    for (i, item) in items.iter().enumerate().skip(from) {
                        progress.reading("");
                        let v = work(item, &progress);
                        // The waiter gave up on this thread: stop reading.
                        if tx.send((i, v)).is_err() {
                            break;
                        }
                    }
                    finish(&shared);
                })
        };
        if let Err(e) = spawned {
            for (i, slot) in out.iter_mut().enumerate().skip(next) {
                *slot = Some(Err(TimedOut {
                    task: names[i].clone(),
                    reading: None,
                    limit: limits.read,
                    not_started: Some(format!("cannot start a reader thread: {e}")),
                }));
            }
            break;
        }
        // Results come in item order, so the item being read is always `next`.
        let mut item_started = Instant::now();
        while next < n {
            let source_left = limits.source.saturating_sub(started.elapsed());
            let item_left = limits.read.saturating_sub(item_started.elapsed());
            match rx.recv_timeout(source_left.min(item_left)) {
                Ok((i, v)) => {
                    out[i] = Some(Ok(v));
                    next = i + 1;
                    item_started = Instant::now();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let reading = progress.get().filter(|r| !r.is_empty());
                    if !abandon(&shared, &names[next], reading.clone()) {
                        // It finished everything right at the deadline.
                        continue;
                    }
                    let source_over = started.elapsed() >= limits.source;
                    out[next] = Some(Err(TimedOut {
                        task: names[next].clone(),
                        reading,
                        limit: if source_over {
                            limits.source
                        } else {
                            limits.read
                        },
                        not_started: None,
                    }));
                    next += 1;
                    if source_over {
                        for (j, slot) in out.iter_mut().enumerate().skip(next) {
                            *slot = Some(Err(TimedOut {
                                task: names[j].clone(),
                                reading: None,
                                limit: limits.source,
                                not_started: Some(format!(
                                    "the scan ran out of its {} budget",
                                    humantime::format_duration(limits.source)
                                )),
                            }));
                        }
                        next = n;
                    }
                    // The rest continue on a fresh thread.
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Every result was taken, so the thread panicked on item `next`.
                    out[next] = Some(Err(TimedOut {
                        task: names[next].clone(),
                        reading: progress.get(),
                        limit: limits.read,
                        not_started: Some("the reader thread failed (panicked)".into()),
                    }));
                    next += 1;
                    break;
                }
            }
        }
    }
    out.into_iter()
        .zip(names)
        .map(|(r, task)| {
            r.unwrap_or_else(|| {
                Err(TimedOut {
                    task,
                    reading: None,
                    limit: limits.read,
                    not_started: Some("not read".into()),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(read_ms: u64, source_ms: u64) -> ScanLimits {
        ScanLimits {
            read: Duration::from_millis(read_ms),
            source: Duration::from_millis(source_ms),
        }
    }

    #[test]
    fn fast_work_returns_its_value() {
        assert_eq!(run("t-fast", Duration::from_secs(5), |_| 7), Ok(7));
    }

    #[test]
    fn slow_work_times_out_naming_what_it_read_and_is_not_restarted_while_stuck() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let t0 = Instant::now();
        let err = run("t-slow", Duration::from_millis(100), move |p| {
            p.reading("/host/proc/1/mountinfo");
            let _ = release_rx.recv();
        })
        .expect_err("times out");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(err.reading.as_deref(), Some("/host/proc/1/mountinfo"));
        let text = err.to_string();
        assert!(
            text.starts_with("t-slow: did not finish within 100ms"),
            "{text}"
        );
        assert!(
            text.contains("stuck reading /host/proc/1/mountinfo"),
            "{text}"
        );
        // Still stuck: refused at once, without another thread.
        let again = run("t-slow", Duration::from_secs(5), |_| ()).expect_err("refused");
        assert!(again
            .not_started
            .as_deref()
            .is_some_and(|w| w.contains("stuck")));
        // Once the read returns, the task may run again.
        release_tx.send(()).expect("release");
        let deadline = Instant::now() + Duration::from_secs(5);
        while refuse("t-slow").is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(run("t-slow", Duration::from_secs(5), |_| 1), Ok(1));
    }

    #[test]
    fn each_item_is_bounded_and_the_rest_continue() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let items: Vec<u32> = (0..6).collect();
        let out = run_each(
            items,
            limits(150, 10_000),
            |i| format!("t-each item {i}"),
            move |&i, p| {
                if i == 2 {
                    p.reading("fd 9");
                    let _ = release_rx.lock().map(|r| r.recv());
                }
                i * 10
            },
        );
        assert_eq!(out.len(), 6);
        for (i, r) in out.iter().enumerate() {
            if i == 2 {
                let e = r.as_ref().expect_err("item 2 hangs");
                assert_eq!(e.task, "t-each item 2");
                assert_eq!(e.reading.as_deref(), Some("fd 9"));
            } else {
                assert_eq!(r.as_ref().ok(), Some(&(i as u32 * 10)), "item {i}");
            }
        }
        release_tx.send(()).expect("release");
    }

    #[test]
    fn the_source_budget_ends_the_scan() {
        let out = run_each(
            (0..50).collect::<Vec<u32>>(),
            limits(1000, 200),
            |i| format!("t-budget item {i}"),
            |_, _| std::thread::sleep(Duration::from_millis(20)),
        );
        assert_eq!(out.len(), 50);
        assert!(out.first().is_some_and(Result::is_ok));
        let last = out.last().expect("50").as_ref().expect_err("not reached");
        assert!(last.to_string().contains("budget"), "{last}");
    }
}
