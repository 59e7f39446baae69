//! `seqit data show`: one example's tokens as training sees them, so that users can check
//! the loss mask (trained: the assistant's tokens and its end-of-turn; masked: the rest).

use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::{bail, Result};
use seqit_engine::resolve_model;
use seqit_train::{chat_tokenizer, explain_example, read_conversations, ChatFormat, TokenPiece};

use crate::cli::DataShowArgs;

const GREEN: &str = "\x1b[1;32m";
const GREY: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

pub fn run(args: DataShowArgs) -> Result<()> {
    let model = resolve_model(args.model.as_deref())?;
    let format = ChatFormat::from_name(args.template.as_deref().unwrap_or("model"))?;
    let mut conversations = read_conversations(&args.file, &format)?;
    if args.index >= conversations.len() {
        bail!(
            "{}: --index {} is out of range: the file has {} records",
            args.file.display(),
            args.index,
            conversations.len()
        );
    }
    let (tokenizer, template) = chat_tokenizer(&model, &format)?;
    let pieces = explain_example(
        &tokenizer,
        &template,
        &conversations.swap_remove(args.index),
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
