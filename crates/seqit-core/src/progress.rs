//! How library jobs report progress and messages without printing: the caller passes a
//! [`Progress`] (the CLI's printer draws a bar on a terminal and writes log lines
//! otherwise; tests pass [`Silent`]).

/// Receives the progress and the messages of a job, one stage at a time.
pub trait Progress: Send + Sync {
    /// A stage begins: `total` units, of which `done` were finished by an earlier run.
    fn start(&self, stage: &str, total: u64, done: u64);
    /// `n` more units finished.
    fn advance(&self, n: u64);
    /// The stage is over.
    fn finish(&self);
    /// Something the user may want to know (shown unless the user asked for quiet).
    fn note(&self, message: &str);
    /// Something that may make the results wrong (always shown).
    fn warn(&self, message: &str);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
    fn note(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}
