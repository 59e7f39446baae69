//! Sequential instruction tuning: turning conversations into trainable token sequences.
//!
//! * [`ChatFormat`] — the model's own chat template or one of the project's formats
//!   (`prompts/templates/`: Tulu, as in the SIT paper, and ChatML);
//!   [`read_conversations`] reads a dataset in the form a format trains on.
//! * [`tokenize_example`] — renders a conversation and marks which tokens carry loss:
//!   exactly the assistant turns, including their end-of-turn token; [`explain_example`]
//!   shows the mask token by token.
//! * [`TrainSettings`] — `seqit train`'s settings, from flags, a config file or `seqit run`.
//! * [`Trainer`] — the loop (accumulation, clipping, schedules, checkpoints, exact resume,
//!   validation loss) over a [`TrainableModel`]: every weight ([`full_finetuning`]) or
//!   LoRA adapters on frozen weights ([`lora`]), exported by [`run_training`] as a Hugging
//!   Face directory and a PEFT adapter. On the CPU in f32 by default; in bf16/f16 with
//!   f32 master weights ([`Precision`]), and on CUDA GPUs in builds with the `cuda`
//!   feature.

#![deny(missing_docs)]

mod batch;
mod conversations;
mod job;
mod loss;
mod optim;
mod precision;
mod recipe;
mod schedule;
mod settings;
mod tokenize;
mod trainable;
mod trainer;

pub use batch::{build_batch, pack, Batch};
pub use conversations::read_conversations;
pub use job::{run_training, TrainJob, TrainSummary};
pub use loss::masked_cross_entropy;
pub use optim::{AdamW, AdamWConfig, Moments};
pub use precision::{LossScale, Precision};
pub use recipe::{
    export_recipe, known_eos_token, paper, DistributedTrainer, Preset, RecipeOptions,
    RecipeSettings, TULU_FOR_LLAMAFACTORY,
};
pub use schedule::{learning_rate, Schedule};
pub use settings::TrainSettings;
pub use tokenize::{
    chat_tokenizer, explain_example, explain_record, tokenize_example, ChatFormat, TokenPiece,
    TokenizedExample,
};
pub use trainable::{full_finetuning, lora, LoraSettings, TrainableModel};
pub use trainer::{latest_checkpoint, truncate_examples, StepMetrics, TrainConfig, Trainer};
