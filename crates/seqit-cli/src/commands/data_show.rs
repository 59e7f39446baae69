//! `seqit data show`: one example's tokens as training sees them, so that users can check
//! the loss mask (trained: the assistant's tokens and its end-of-turn; masked: the rest).

use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::Result;
use seqit_train::{explain_record, ChatFormat, TokenPiece};

use crate::cli::DataShowArgs;

const GREEN: &str = "\x1b[1;32m";
const GREY: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

pub fn run(args: DataShowArgs) -> Result<()> {
    let format = ChatFormat::from_name(args.template.as_deref().unwrap_or("model"))?;
    let variables = args.chat_template_variables.into_iter().collect();
    let pieces = explain_record(
        &args.file,
        args.model.as_deref(),
        &format,
        &variables,
        args.index,
    )?;
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    print!("{}", render(&pieces, color));
    Ok(())
}

/// Each token as `[text|id]` when trained and `(text|id)` when masked (with colour:
/// green and grey instead of the brackets), line breaks kept after `\n`, then a summary.
fn render(pieces: &[TokenPiece], color: bool) -> String {
    let mut out = String::new();
    for piece in pieces {
        let text = piece.text.replace('\n', "\\n");
        match (color, piece.trained) {
            (true, true) => write!(out, "{GREEN}{text}|{}{RESET}", piece.id),
            (true, false) => write!(out, "{GREY}{text}|{}{RESET}", piece.id),
            (false, true) => write!(out, "[{text}|{}]", piece.id),
            (false, false) => write!(out, "({text}|{})", piece.id),
        }
        .expect("writing to a String");
        out.push(if piece.text.ends_with('\n') {
            '\n'
        } else {
            ' '
        });
    }
    let trained = pieces.iter().filter(|p| p.trained).count();
    let legend = if color {
        format!("{GREEN}trained{RESET}, {GREY}masked{RESET}")
    } else {
        "[trained], (masked)".to_string()
    };
    writeln!(
        out,
        "\n{} tokens, {trained} trained ({legend}; text|id)",
        pieces.len()
    )
    .expect("writing to a String");
    out
}
