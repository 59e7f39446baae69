//! The text side of a model (tokenizer and chat template) without its weights.

use std::path::Path;

use anyhow::Result;
use seqit_model::gguf::GgufFile;

use crate::chat_template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// Reads the tokenizer and chat-template source of a `.gguf` file (header only) or a
/// Hugging Face directory.
pub fn load_tokenizer(path: &Path) -> Result<(Tokenizer, Option<String>)> {
    if path.is_dir() {
        return Ok((
            Tokenizer::from_hf_dir(path)?,
            ChatTemplate::from_hf_dir(path)?,
        ));
    }
    let file = GgufFile::open(path)?;
    let template = file.string("tokenizer.chat_template").map(String::from);
    Ok((Tokenizer::from_gguf(&file)?, template))
}
