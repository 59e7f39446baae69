//! Sequential instruction tuning: turning conversations into trainable token sequences.
//!
//! * [`ChatFormat`] — the model's own chat template or one of the project's formats
//!   (`prompts/templates/`: Tulu, as in the SIT paper, and ChatML).
//! * [`tokenize_example`] — renders a conversation and marks which tokens carry loss:
//!   exactly the assistant turns, including their end-of-turn token.

mod batch;
mod job;
mod loss;
mod optim;
mod recipe;
mod schedule;
mod tokenize;
mod trainable;
mod trainer;

pub use batch::{build_batch, pack, Batch};
pub use job::{run_training, TrainJob, TrainSummary};
pub use loss::masked_cross_entropy;
pub use optim::{AdamW, AdamWConfig, Moments};
pub use recipe::{export_recipe, DistributedTrainer, RecipeSettings};
pub use schedule::{learning_rate, Schedule};
pub use tokenize::{tokenize_example, ChatFormat, TokenizedExample};
pub use trainable::{full_finetuning, TrainableModel};
pub use trainer::{truncate_examples, StepMetrics, TrainConfig, Trainer};
