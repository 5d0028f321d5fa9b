//! The feeds thread: writes positions feeds' JSON at a lower priority than
//! everything else. A dispatch map's update is thousands of unit objects a
//! second; under CPU pressure it waits, while the engine's writer, alerts
//! and nearest answers go first. Sessions hand it one job at a time each.

use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// The feeds thread's queue; the thread ends when every clone is dropped.
#[derive(Clone, Debug)]
pub struct FeedWriter {
    tx: mpsc::Sender<Job>,
}

impl FeedWriter {
    /// Starts the thread.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bluelight-feeds".into())
            .spawn(move || {
                bluelight_ingest::priority::lower_this_thread();
                for job in rx {
                    // One bad job must not end every map's updates.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        tracing::error!("a positions feed job panicked");
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Runs `f` on the feeds thread (dropped unrun if the thread is gone).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let _ = self.tx.send(Box::new(f) as Job);
    }
}
