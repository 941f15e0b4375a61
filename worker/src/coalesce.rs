//! Per-repository coalescing: one refetch at a time per repository, for as many messages
//! as arrived for it.
//!
//! The first message for a repository starts a task that waits `window`, takes every
//! message gathered meanwhile and refetches once; messages arriving while the refetch runs
//! are gathered for one follow-up refetch (the running one may have listed the tags before
//! their change). All messages of a refetch are settled together with its result. A
//! semaphore bounds the refetches running at once across repositories.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use regindex::model::RepositoryName;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::outcome::Failure;

/// What to do for a repository, and with the messages that asked for it.
pub trait Job<T>: Send + Sync + 'static {
    fn run<'a>(&'a self, repository: &'a RepositoryName) -> BoxFuture<'a, Result<(), Failure>>;
    fn settle<'a>(
        &'a self,
        repository: &'a RepositoryName,
        items: Vec<T>,
        result: Result<(), Failure>,
    ) -> BoxFuture<'a, ()>;
}

pub struct Coalescer<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    /// A repository has an entry while its task lives; the entry holds the messages not
    /// taken by a refetch yet.
    pending: Mutex<HashMap<RepositoryName, Vec<T>>>,
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
    pub fn submit(&self, repository: RepositoryName, item: T) {
        let mut pending = self.inner.lock();
        if let Some(items) = pending.get_mut(&repository) {
            items.push(item);
            return;
        }
        pending.insert(repository.clone(), vec![item]);
        drop(pending);
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = inner.kill.cancelled() => {}
                _ = inner.drain(repository) => {}
            }
        });
    }

    /// Repositories with a task (waiting, queued or refetching).
    pub fn active(&self) -> usize {
        self.inner.lock().len()
    }
}

impl<T: Send + 'static> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RepositoryName, Vec<T>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn drain(&self, repository: RepositoryName) {
        loop {
            tokio::time::sleep(self.window).await;
            let Ok(_permit) = self.permits.acquire().await else {
                return;
            };
            let items = self
                .lock()
                .get_mut(&repository)
                .map(std::mem::take)
                .unwrap_or_default();
            let result = self.job.run(&repository).await;
            self.job.settle(&repository, items, result).await;
            // Checked and removed under the lock, so a message submitted now either lands
            // in this entry (and we loop) or finds no entry and starts a new task.
            let mut pending = self.lock();
            if pending.get(&repository).is_none_or(Vec::is_empty) {
                pending.remove(&repository);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records refetches and settlements; each refetch takes `duration`.
    #[derive(Default)]
    struct Recorder {
        duration: Duration,
        fail: bool,
        runs: Mutex<Vec<String>>,
        settled: Mutex<Vec<(String, Vec<u32>, bool)>>,
        running: Mutex<HashMap<String, usize>>,
        max_same_repository: AtomicUsize,
        running_total: AtomicUsize,
        max_total: AtomicUsize,
    }

    impl Job<u32> for Recorder {
        fn run<'a>(&'a self, repository: &'a RepositoryName) -> BoxFuture<'a, Result<(), Failure>> {
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
                self.runs.lock().unwrap().push(name.clone());
                tokio::time::sleep(self.duration).await;
                self.running_total.fetch_sub(1, Ordering::SeqCst);
                *self.running.lock().unwrap().get_mut(&name).unwrap() -= 1;
                if self.fail {
                    Err(Failure::transient("down"))
                } else {
                    Ok(())
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
            Duration::from_millis(50),
            concurrency,
            tracker.clone(),
            CancellationToken::new(),
        );
        (c, tracker)
    }

    async fn finish(tracker: TaskTracker) {
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn messages_within_the_window_make_one_refetch() {
        let job = Arc::new(Recorder::default());
        let (c, tracker) = coalescer(job.clone(), 4);
        for i in 0..3 {
            c.submit(repo("a"), i);
        }
        c.submit(repo("b"), 9);
        finish(tracker).await;
        let mut runs = job.runs.lock().unwrap().clone();
        runs.sort();
        assert_eq!(runs, ["a", "b"]);
        let settled = job.settled.lock().unwrap();
        assert!(settled.contains(&("a".into(), vec![0, 1, 2], true)));
        assert!(settled.contains(&("b".into(), vec![9], true)));
        assert_eq!(c.active(), 0);
    }

    #[tokio::test]
    async fn messages_during_a_refetch_make_one_follow_up_never_overlapping() {
        let job = Arc::new(Recorder {
            duration: Duration::from_millis(200),
            ..Recorder::default()
        });
        let (c, tracker) = coalescer(job.clone(), 4);
        c.submit(repo("a"), 1);
        tokio::time::sleep(Duration::from_millis(100)).await; // now refetching
        c.submit(repo("a"), 2);
        c.submit(repo("a"), 3);
        finish(tracker).await;
        assert_eq!(*job.runs.lock().unwrap(), ["a", "a"]);
        assert_eq!(
            *job.settled.lock().unwrap(),
            [("a".into(), vec![1], true), ("a".into(), vec![2, 3], true)]
        );
        assert_eq!(job.max_same_repository.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrency_is_bounded_across_repositories() {
        let job = Arc::new(Recorder {
            duration: Duration::from_millis(50),
            ..Recorder::default()
        });
        let (c, tracker) = coalescer(job.clone(), 2);
        for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            c.submit(repo(name), i as u32);
        }
        finish(tracker).await;
        assert_eq!(job.runs.lock().unwrap().len(), 5);
        assert_eq!(job.max_total.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_refetch_settles_all_its_messages_as_failed() {
        let job = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        let (c, tracker) = coalescer(job.clone(), 1);
        c.submit(repo("a"), 1);
        c.submit(repo("a"), 2);
        finish(tracker).await;
        assert_eq!(
            *job.settled.lock().unwrap(),
            [("a".into(), vec![1, 2], false)]
        );
    }
}
