//! Per-repository coalescing: one refetch at a time per repository, for as many messages
//! as arrived for it, and at most one refetch start per `window` per repository.
//!
//! The first message for a quiet repository is refetched at once (leading edge), so a push
//! is queryable as soon as one refetch allows. Messages that arrive while that refetch
//! runs, or within `window` of its start, are gathered and refetched together once the
//! window has passed (the running refetch may have listed the tags before their change):
//! the repository is always refetched after the last message it received, and a burst
//! (the 20 manifests of a multi-platform push) costs one refetch per window, not one per
//! message. A manifest pushed by digest (no tag) changes no tag by itself and comes in
//! bursts before the tag that names them: such messages ([`Urgency::Quiet`]) wait until
//! they stop coming for a window, so the 20 entries of a multi-platform list and its tag
//! make one or two refetches. All messages of a refetch are settled together with its
//! result. A refetch that
//! did not see what its messages announced (a pushed tag the registry did not show yet)
//! asks for one more refetch after the window, with or without new messages. A semaphore
//! bounds the refetches running at once across repositories.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use regindex::model::RepositoryName;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::outcome::Failure;

/// How a successful refetch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    Done,
    /// Refetch once more after the window: the registry did not show yet what the
    /// messages announced.
    Again,
}

/// What to do for a repository, and with the messages that asked for it.
pub trait Job<T>: Send + Sync + 'static {
    /// Refetches `repository` for `items` (the messages taken; empty for a follow-up
    /// the job asked for).
    fn run<'a>(
        &'a self,
        repository: &'a RepositoryName,
        items: &'a [T],
    ) -> BoxFuture<'a, Result<Ran, Failure>>;
    fn settle<'a>(
        &'a self,
        repository: &'a RepositoryName,
        items: Vec<T>,
        result: Result<(), Failure>,
    ) -> BoxFuture<'a, ()>;
}

/// How soon a message wants its refetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// At once (leading edge): a tag may have changed.
    Now,
    /// Once such messages stop coming for a window (at most [`MAX_QUIET_WAIT_WINDOWS`]
    /// windows after the first): a manifest pushed by digest changes no tag by itself,
    /// and it comes in bursts (the entries of a multi-platform list, pushed before the
    /// list's tag).
    Quiet,
}

/// A quiet message waits at most this many windows for its refetch.
pub const MAX_QUIET_WAIT_WINDOWS: u32 = 10;

pub struct Coalescer<T> {
    inner: Arc<Inner<T>>,
}

/// A repository's messages not taken by a refetch yet.
struct Pending<T> {
    items: Vec<T>,
    /// One of them (or the job) wants a refetch at once.
    now: bool,
    /// The first and the last quiet message since the last refetch took them.
    first_quiet: Option<Instant>,
    last_quiet: Option<Instant>,
    /// Wakes the task when a message wants a refetch at once.
    wake: Arc<Notify>,
}

impl<T> Pending<T> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            now: false,
            first_quiet: None,
            last_quiet: None,
            wake: Arc::new(Notify::new()),
        }
    }

    fn add(&mut self, item: T, urgency: Urgency) {
        self.items.push(item);
        match urgency {
            Urgency::Now => {
                self.now = true;
                self.wake.notify_one();
            }
            Urgency::Quiet => {
                let at = Instant::now();
                self.first_quiet.get_or_insert(at);
                self.last_quiet = Some(at);
            }
        }
    }

    /// When the pending messages want their refetch; `None` when there are none.
    fn due(&self, window: Duration) -> Option<Instant> {
        if self.now {
            return Some(Instant::now());
        }
        match (self.first_quiet, self.last_quiet) {
            (Some(first), Some(last)) => {
                Some((last + window).min(first + window * MAX_QUIET_WAIT_WINDOWS))
            }
            _ => None,
        }
    }

    fn take(&mut self) -> Vec<T> {
        self.now = false;
        self.first_quiet = None;
        self.last_quiet = None;
        std::mem::take(&mut self.items)
    }
}

struct Inner<T> {
    /// A repository has an entry while its task lives (waiting, refetching, or waiting
    /// out the window after a refetch started).
    pending: Mutex<HashMap<RepositoryName, Pending<T>>>,
    /// The least time between two refetch starts of one repository.
    window: Duration,
    permits: Semaphore,
    job: Arc<dyn Job<T>>,
    tracker: TaskTracker,
    /// Cancelled when the worker is dropped: tasks stop where they are, their messages
    /// unacknowledged (the broker hands them out again).
    kill: CancellationToken,
}

impl<T: Send + 'static> Coalescer<T> {
    pub fn new(
        job: Arc<dyn Job<T>>,
        window: Duration,
        concurrency: usize,
        tracker: TaskTracker,
        kill: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pending: Mutex::new(HashMap::new()),
                window,
                permits: Semaphore::new(concurrency.max(1)),
                job,
                tracker,
                kill,
            }),
        }
    }

    /// Adds a message for `repository`; starts its task if none runs.
    pub fn submit(&self, repository: RepositoryName, item: T, urgency: Urgency) {
        let mut pending = self.inner.lock();
        if let Some(entry) = pending.get_mut(&repository) {
            entry.add(item, urgency);
            return;
        }
        let mut entry = Pending::new();
        entry.add(item, urgency);
        pending.insert(repository.clone(), entry);
        drop(pending);
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = inner.kill.cancelled() => {}
                _ = inner.drain(repository) => {}
            }
        });
    }

    /// Repositories with a task (waiting, refetching, or in their window).
    pub fn active(&self) -> usize {
        self.inner.lock().len()
    }
}

impl<T: Send + 'static> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RepositoryName, Pending<T>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the repository's messages want their refetch. False when there is
    /// nothing left to refetch for (the entry is then removed).
    async fn until_due(&self, repository: &RepositoryName) -> bool {
        loop {
            let (due, wake) = {
                let mut pending = self.lock();
                let Some(entry) = pending.get(repository) else {
                    return false;
                };
                match entry.due(self.window) {
                    Some(due) => (due, entry.wake.clone()),
                    None => {
                        pending.remove(repository);
                        return false;
                    }
                }
            };
            if due <= Instant::now() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = wake.notified() => {}
            }
        }
    }

    async fn drain(&self, repository: RepositoryName) {
        while self.until_due(&repository).await {
            let (started, ran) = {
                let Ok(_permit) = self.permits.acquire().await else {
                    return;
                };
                let items = self
                    .lock()
                    .get_mut(&repository)
                    .map(Pending::take)
                    .unwrap_or_default();
                let started = Instant::now();
                let result = self.job.run(&repository, &items).await;
                let ran = result.as_ref().ok().copied();
                self.job
                    .settle(&repository, items, result.map(|_| ()))
                    .await;
                (started, ran)
            };
            if ran == Some(Ran::Again) {
                if let Some(entry) = self.lock().get_mut(&repository) {
                    entry.now = true;
                }
            }
            // Messages arriving until the window has passed wait for one more refetch.
            tokio::time::sleep_until(started + self.window).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WINDOW: Duration = Duration::from_millis(200);

    /// Records refetches (with their start time, relative to `epoch`) and settlements;
    /// each refetch takes `duration`.
    struct Recorder {
        epoch: Instant,
        duration: Duration,
        fail: bool,
        /// Runs (counted from 0) that ask for one more.
        again: Vec<usize>,
        runs: Mutex<Vec<(String, Duration)>>,
        settled: Mutex<Vec<(String, Vec<u32>, bool)>>,
        running: Mutex<HashMap<String, usize>>,
        max_same_repository: AtomicUsize,
        running_total: AtomicUsize,
        max_total: AtomicUsize,
    }

    impl Recorder {
        fn new(duration: Duration) -> Self {
            Self {
                epoch: Instant::now(),
                duration,
                fail: false,
                again: Vec::new(),
                runs: Mutex::default(),
                settled: Mutex::default(),
                running: Mutex::default(),
                max_same_repository: AtomicUsize::new(0),
                running_total: AtomicUsize::new(0),
                max_total: AtomicUsize::new(0),
            }
        }

        fn runs(&self) -> Vec<(String, Duration)> {
            self.runs.lock().unwrap().clone()
        }

        fn settled(&self) -> Vec<(String, Vec<u32>, bool)> {
            self.settled.lock().unwrap().clone()
        }
    }

    impl Job<u32> for Recorder {
        fn run<'a>(
            &'a self,
            repository: &'a RepositoryName,
            _items: &'a [u32],
        ) -> BoxFuture<'a, Result<Ran, Failure>> {
            Box::pin(async move {
                let name = repository.to_string();
                {
                    let mut running = self.running.lock().unwrap();
                    let n = running.entry(name.clone()).or_default();
                    *n += 1;
                    self.max_same_repository.fetch_max(*n, Ordering::SeqCst);
                }
                let total = self.running_total.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_total.fetch_max(total, Ordering::SeqCst);
                let run = {
                    let mut runs = self.runs.lock().unwrap();
                    runs.push((name.clone(), self.epoch.elapsed()));
                    runs.len() - 1
                };
                tokio::time::sleep(self.duration).await;
                self.running_total.fetch_sub(1, Ordering::SeqCst);
                *self.running.lock().unwrap().get_mut(&name).unwrap() -= 1;
                if self.fail {
                    Err(Failure::transient("down"))
                } else if self.again.contains(&run) {
                    Ok(Ran::Again)
                } else {
                    Ok(Ran::Done)
                }
            })
        }

        fn settle<'a>(
            &'a self,
            repository: &'a RepositoryName,
            items: Vec<u32>,
            result: Result<(), Failure>,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                self.settled
                    .lock()
                    .unwrap()
                    .push((repository.to_string(), items, result.is_ok()));
            })
        }
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    fn coalescer(job: Arc<Recorder>, concurrency: usize) -> (Coalescer<u32>, TaskTracker) {
        let tracker = TaskTracker::new();
        let c = Coalescer::new(
            job,
            WINDOW,
            concurrency,
            tracker.clone(),
            CancellationToken::new(),
        );
        (c, tracker)
    }

    async fn finish(tracker: TaskTracker) {
        tracker.close();
        tokio::time::timeout(Duration::from_secs(60), tracker.wait())
            .await
            .unwrap();
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_message_is_refetched_at_once() {
        let job = Arc::new(Recorder::new(ms(5)));
        let (c, tracker) = coalescer(job.clone(), 4);
        c.submit(repo("a"), 1, Urgency::Now);
        c.submit(repo("b"), 2, Urgency::Now);
        finish(tracker).await;
        let mut runs = job.runs();
        runs.sort();
        assert_eq!(runs, [("a".into(), ms(0)), ("b".into(), ms(0))]);
        let settled = job.settled();
        assert!(settled.contains(&("a".into(), vec![1], true)));
        assert!(settled.contains(&("b".into(), vec![2], true)));
        assert_eq!(c.active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_during_a_refetch_make_one_follow_up_never_overlapping() {
        let job = Arc::new(Recorder::new(ms(300)));
        let (c, tracker) = coalescer(job.clone(), 4);
        c.submit(repo("a"), 1, Urgency::Now);
        tokio::time::sleep(ms(100)).await; // now refetching
        c.submit(repo("a"), 2, Urgency::Now);
        c.submit(repo("a"), 3, Urgency::Now);
        finish(tracker).await;
        // The follow-up starts when the first ends (its window has passed by then).
        assert_eq!(job.runs(), [("a".into(), ms(0)), ("a".into(), ms(300))]);
        assert_eq!(
            job.settled(),
            [("a".into(), vec![1], true), ("a".into(), vec![2, 3], true)]
        );
        assert_eq!(job.max_same_repository.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_costs_one_refetch_per_window_and_the_last_message_is_covered() {
        let job = Arc::new(Recorder::new(ms(5)));
        let (c, tracker) = coalescer(job.clone(), 4);
        // 21 messages 15 ms apart (a 20-platform list push): 300 ms of events.
        for i in 0..21 {
            c.submit(repo("a"), i, Urgency::Now);
            tokio::time::sleep(ms(15)).await;
        }
        finish(tracker).await;
        let starts: Vec<Duration> = job.runs().into_iter().map(|(_, at)| at).collect();
        assert_eq!(starts, [ms(0), ms(200), ms(400)]);
        let settled = job.settled();
        let all: Vec<u32> = settled
            .iter()
            .flat_map(|(_, items, _)| items.clone())
            .collect();
        assert_eq!(all, (0..21).collect::<Vec<_>>());
        // The last message (at 300 ms) was taken by the refetch that started after it.
        assert_eq!(settled.last().unwrap().1.last(), Some(&20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_repository_is_refetched_at_once_again() {
        let job = Arc::new(Recorder::new(ms(5)));
        let (c, tracker) = coalescer(job.clone(), 4);
        c.submit(repo("a"), 1, Urgency::Now);
        tokio::time::sleep(ms(250)).await; // past the window: the task is gone
        assert_eq!(c.active(), 0);
        c.submit(repo("a"), 2, Urgency::Now);
        finish(tracker).await;
        assert_eq!(job.runs(), [("a".into(), ms(0)), ("a".into(), ms(250))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refetch_that_asks_for_another_gets_one_after_the_window() {
        let job = Arc::new(Recorder {
            again: vec![0],
            ..Recorder::new(ms(5))
        });
        let (c, tracker) = coalescer(job.clone(), 4);
        c.submit(repo("a"), 1, Urgency::Now);
        finish(tracker).await;
        assert_eq!(job.runs(), [("a".into(), ms(0)), ("a".into(), ms(200))]);
        // The message is settled by the first refetch; the second runs without any.
        assert_eq!(
            job.settled(),
            [("a".into(), vec![1], true), ("a".into(), vec![], true)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_message_alone_waits_one_window() {
        let job = Arc::new(Recorder::new(ms(5)));
        let (c, tracker) = coalescer(job.clone(), 4);
        c.submit(repo("a"), 1, Urgency::Quiet);
        finish(tracker).await;
        assert_eq!(job.runs(), [("a".into(), ms(200))]);
        assert_eq!(job.settled(), [("a".into(), vec![1], true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_push_is_one_refetch_on_its_tag() {
        let job = Arc::new(Recorder::new(ms(5)));
        let (c, tracker) = coalescer(job.clone(), 4);
        // 20 entries pushed by digest 15 ms apart, then the tagged list.
        for i in 0..20 {
            c.submit(repo("a"), i, Urgency::Quiet);
            tokio::time::sleep(ms(15)).await;
        }
        c.submit(repo("a"), 20, Urgency::Now);
        finish(tracker).await;
        assert_eq!(job.runs(), [("a".into(), ms(300))]);
        assert_eq!(job.settled(), [("a".into(), (0..21).collect(), true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_messages_that_never_stop_still_get_refetched() {
        let job = Arc::new(Recorder::new(ms(5)));
        let (c, tracker) = coalescer(job.clone(), 4);
        for i in 0..30 {
            c.submit(repo("a"), i, Urgency::Quiet);
            tokio::time::sleep(ms(100)).await;
        }
        finish(tracker).await;
        let starts: Vec<Duration> = job.runs().into_iter().map(|(_, at)| at).collect();
        // At most 10 windows after the first unrefetched one, and once they stop.
        assert_eq!(starts, [ms(2000), ms(3100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_across_repositories() {
        let job = Arc::new(Recorder::new(ms(50)));
        let (c, tracker) = coalescer(job.clone(), 2);
        for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            c.submit(repo(name), i as u32, Urgency::Now);
        }
        finish(tracker).await;
        assert_eq!(job.runs().len(), 5);
        assert_eq!(job.max_total.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refetch_settles_all_its_messages_as_failed() {
        let job = Arc::new(Recorder {
            fail: true,
            ..Recorder::new(ms(5))
        });
        let (c, tracker) = coalescer(job.clone(), 1);
        c.submit(repo("a"), 1, Urgency::Now);
        c.submit(repo("a"), 2, Urgency::Now);
        finish(tracker).await;
        assert_eq!(job.settled(), [("a".into(), vec![1, 2], false)]);
    }
}
