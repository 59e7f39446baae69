//! `seqit serve`.

use anyhow::Result;

use crate::cli::ServeArgs;

pub fn run(_args: ServeArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
