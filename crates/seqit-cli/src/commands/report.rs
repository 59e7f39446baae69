//! `seqit report RUN_DIR...`: a self-contained HTML page or a Markdown summary.

use anyhow::{bail, Context, Result};

use crate::cli::ReportArgs;

pub fn run(args: ReportArgs) -> Result<()> {
    let data = seqit_report::load_runs(&args.runs)?;
    let options = seqit_report::Options { title: args.title };
    let text = match args.format.as_str() {
        "md" => seqit_report::render_markdown(&data, &options),
        _ => seqit_report::render_html(&data, &options),
    };
    match args.output {
        Some(path) => {
            seqit_data::write_file_atomic(&path, text.as_bytes())
                .with_context(|| format!("cannot write the report `{}`", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None if args.format == "md" => print!("{text}"),
        None => bail!(
            "an HTML report needs `--output FILE`\nhint: or pass `--format md` to print Markdown"
        ),
    }
    Ok(())
}
