//! How pipelines report progress without printing: the caller passes a [`Progress`]
//! (the CLI draws a bar or writes lines).

/// Receives progress of one stage of work.
pub trait Progress: Send + Sync {
    /// A stage begins: `total` units, of which `done` were finished by an earlier run.
    fn start(&self, stage: &str, total: u64, done: u64);
    /// `n` more units finished.
    fn advance(&self, n: u64);
    /// The stage is over.
    fn finish(&self);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
