//! `seqit model convert`.

use anyhow::{bail, Result};
use candle_core::DType;
use seqit_engine::{convert_gguf_to_hf, resolve_model};

use crate::cli::ConvertArgs;

pub fn convert(args: ConvertArgs) -> Result<()> {
    let path = resolve_model(args.model.as_deref())?;
    if path.is_dir() {
        bail!(
            "`{}` is already a Hugging Face directory; `convert` reads a .gguf file",
            path.display()
        );
    }
    let dtype = match args.dtype.as_str() {
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        _ => DType::F32,
    };
    convert_gguf_to_hf(&path, &args.output, dtype)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
