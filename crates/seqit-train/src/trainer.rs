//! The training loop: seeded shuffling, gradient accumulation, clipping, schedules,
//! metrics, atomic checkpoints and exact resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use seqit_model::LogitsFor;
use serde::{Deserialize, Serialize};

use crate::batch::{build_batch, pack, Batch};
use crate::loss::masked_cross_entropy;
use crate::optim::{AdamW, AdamWConfig, Moments};
use crate::precision::{LossScale, Precision};
use crate::schedule::{learning_rate, Schedule};
use crate::tokenize::TokenizedExample;
use crate::trainable::{LoraSettings, TrainableModel};

/// Settings of the training loop; checkpoints keep them, and a resume needs the same ones
/// (`max_steps` and `save_every` aside).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Peak learning rate, reached at the end of the warm-up.
    pub lr: f64,
    /// Rows per micro-batch (packed rows when `packing`).
    pub batch_size: usize,
    /// Micro-batches per optimizer update: an update sees `batch_size × grad_accum` rows.
    pub grad_accum: usize,
    /// Tokens per example (per packed row with `packing`); longer examples are cut.
    pub max_len: usize,
    /// Share of the updates spent in linear warm-up (rounded up to whole updates).
    pub warmup_ratio: f64,
    /// How the learning rate decays after the warm-up.
    pub schedule: Schedule,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Gradients are scaled down to this global L2 norm when above it; `None`: no clipping.
    pub max_grad_norm: Option<f64>,
    /// Seeds the shuffle of each epoch, LoRA's dropout masks and, in
    /// [`run_training`](crate::run_training), the adapters' initial weights.
    pub seed: u64,
    /// Pack several examples into each row of up to `max_len` tokens, with no attention
    /// between them, instead of one padded example per row.
    pub packing: bool,
    /// Save a checkpoint every this many updates (0: only at the end).
    pub save_every: usize,
    /// Stop after this many updates (for tests and the resume check); `None` runs all epochs.
    pub max_steps: Option<usize>,
    /// LoRA adapters instead of full fine-tuning.
    #[serde(default)]
    pub lora: Option<LoraSettings>,
    /// The dtype of the weights and activations (the optimizer's state is f32).
    #[serde(default)]
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            lr: 2e-5,
            batch_size: 4,
            grad_accum: 1,
            max_len: 2048,
            warmup_ratio: 0.03,
            schedule: Schedule::Linear,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            seed: 42,
            packing: false,
            save_every: 0,
            max_steps: None,
            lora: None,
            precision: Precision::F32,
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    /// Updates done, this one included (1 for the first).
    pub step: usize,
    /// Epoch of this update, from 0.
    pub epoch: usize,
    /// Mean cross-entropy per trained token over the update's micro-batches, in nats.
    pub loss: f64,
    /// Learning rate this update applied.
    pub lr: f64,
    /// Global L2 norm of the gradients before clipping, loss scale removed.
    pub grad_norm: f64,
    /// Tokens in the update's batches, padding excluded.
    pub tokens: usize,
    /// Tokens that carried loss in the update.
    pub trained_tokens: usize,
    /// `tokens` over the update's wall time (the validation pass excluded).
    pub tokens_per_second: f64,
    /// Mean loss per trained token on the validation data, when evaluated at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// f16 only: the loss-scale factor this update's gradients were computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// f16 only: the gradients overflowed at this loss scale, so the update was skipped
    /// (and `grad_norm` is 0).
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where training stands; saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Progress {
    /// Updates done.
    step: usize,
    config: TrainConfig,
    #[serde(default)]
    loss_scale: Option<LossScale>,
}

/// Examples dropped because truncation left them without trained tokens.
pub fn truncate_examples(
    examples: Vec<TokenizedExample>,
    max_len: usize,
) -> (Vec<TokenizedExample>, usize) {
    let mut skipped = 0;
    let kept = examples
        .into_iter()
        .filter_map(|mut e| {
            e.input_ids.truncate(max_len);
            e.trained.truncate(max_len);
            // The first token is never predicted, so it cannot carry loss.
            if e.trained.iter().skip(1).any(|t| *t) {
                Some(e)
            } else {
                skipped += 1;
                None
            }
        })
        .collect();
    (kept, skipped)
}

/// The micro-batches of every update, in order: a seeded shuffle per epoch, then rows
/// (padded or packed) grouped `batch_size` per micro-batch and `grad_accum` per update.
fn plan(examples: &[TokenizedExample], config: &TrainConfig) -> Vec<Vec<Vec<Vec<usize>>>> {
    let mut updates = Vec::new();
    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(
            config.seed.wrapping_add(epoch as u64),
        ));
        let rows: Vec<Vec<usize>> = if config.packing {
            let refs: Vec<&TokenizedExample> = order.iter().map(|&i| &examples[i]).collect();
            let packed = pack(&refs, config.max_len);
            // Map packed references back to indices.
            packed
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|e| {
                            examples
                                .iter()
                                .position(|x| std::ptr::eq(x, e))
                                .expect("from examples")
                        })
                        .collect()
                })
                .collect()
        } else {
            order.into_iter().map(|i| vec![i]).collect()
        };
        let micro: Vec<Vec<Vec<usize>>> = rows
            .chunks(config.batch_size.max(1))
            .map(|c| c.to_vec())
            .collect();
        for update in micro.chunks(config.grad_accum.max(1)) {
            updates.push(update.to_vec());
        }
    }
    updates
}

/// The training loop over a [`TrainableModel`]: runs a [`TrainConfig`], appends to
/// `metrics.jsonl` and writes `checkpoint-N/` in its output directory, and resumes from
/// them exactly.
pub struct Trainer {
    /// The model being trained; read it after [`Trainer::train`] to export it.
    pub model: TrainableModel,
    optimizer: AdamW,
    config: TrainConfig,
    output: PathBuf,
    step: usize,
    /// f16 only.
    loss_scale: Option<LossScale>,
    /// Validation examples and how many updates apart to evaluate them (0: at the end).
    eval: Option<(Vec<TokenizedExample>, usize)>,
}

/// The dropout seed of one micro-batch: a function of the run's seed and position only,
/// so that a resumed run draws the same masks.
fn micro_batch_seed(seed: u64, step: usize, micro: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
        ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (micro as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

impl Trainer {
    /// Starts, or resumes from the newest checkpoint in `output` when `resume` is set.
    pub fn new(
        model: TrainableModel,
        config: TrainConfig,
        output: &Path,
        resume: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(output)
            .with_context(|| format!("cannot create `{}`", output.display()))?;
        let params = model.params.iter().map(|(_, v)| v.clone()).collect();
        let optimizer = AdamW::new(
            params,
            AdamWConfig {
                weight_decay: config.weight_decay,
                ..AdamWConfig::default()
            },
        )?;
        let mut trainer = Self {
            model,
            optimizer,
            loss_scale: config.precision.initial_loss_scale(),
            config,
            output: output.to_path_buf(),
            step: 0,
            eval: None,
        };
        remove_staged_checkpoints(output)?;
        if resume {
            if let Some(dir) = latest_checkpoint(output)? {
                trainer.load_checkpoint(&dir)?;
            }
        } else if output.join("metrics.jsonl").exists() {
            bail!(
                "`{}` already holds a training run\nhint: pass --resume to continue it, or choose another --output",
                output.display()
            );
        }
        Ok(trainer)
    }

    /// Updates done so far, counting those before a resume.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The trainable tensors under their names, in f32 on the CPU (for bf16/f16 runs:
    /// the optimizer's master weights).
    pub fn trained_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let names = self.model.params.iter().map(|(n, _)| n.clone());
        Ok(names.zip(self.optimizer.f32_weights()?).collect())
    }

    /// Evaluates `examples` every `every` updates and after the last one (0: only then).
    pub fn with_eval(mut self, examples: Vec<TokenizedExample>, every: usize) -> Self {
        self.eval = (!examples.is_empty()).then_some((examples, every));
        self
    }

    fn set_dropout(&self, seed: Option<u64>) {
        if let Some((_, dropout)) = &self.model.lora {
            match seed {
                Some(seed) => dropout.enable(seed),
                None => dropout.disable(),
            }
        }
    }

    /// `rows` (each one or more packed examples) as one padded batch, and the model's
    /// logits at every position.
    fn forward_batch(&self, rows: &[Vec<&TokenizedExample>]) -> Result<(Batch, Tensor)> {
        let batch = build_batch(rows, self.model.llama.device())?;
        let logits = self.model.llama.forward(
            &batch.input_ids,
            &batch.positions,
            Some(&batch.mask),
            None,
            LogitsFor::AllPositions,
        )?;
        Ok((batch, logits))
    }

    /// Loss on `examples` (mean over their trained tokens), without dropout or updates.
    pub fn evaluate(&self, examples: &[TokenizedExample]) -> Result<f64> {
        self.set_dropout(None);
        let (mut total, mut count) = (0f64, 0usize);
        for chunk in examples.chunks(self.config.batch_size.max(1)) {
            let rows: Vec<Vec<&TokenizedExample>> = chunk.iter().map(|e| vec![e]).collect();
            let (batch, logits) = self.forward_batch(&rows)?;
            let loss = masked_cross_entropy(&logits.detach(), &batch.targets, &batch.weights)?;
            total += loss.to_scalar::<f32>()? as f64 * batch.trained_tokens as f64;
            count += batch.trained_tokens;
        }
        Ok(total / count.max(1) as f64)
    }

    /// Trains on `examples` until the plan (or `max_steps`) is done; returns the metrics
    /// of the updates made in this call.
    pub fn train(
        &mut self,
        examples: &[TokenizedExample],
        on_step: &mut dyn FnMut(&StepMetrics),
    ) -> Result<Vec<StepMetrics>> {
        let updates = plan(examples, &self.config);
        let total = updates.len();
        let last = self.config.max_steps.map_or(total, |m| m.min(total));
        let warmup = (self.config.warmup_ratio * total as f64).ceil() as usize;
        let mut metrics_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output.join("metrics.jsonl"))?;
        let updates_per_epoch = total / self.config.epochs.max(1);
        let mut out = Vec::new();
        while self.step < last {
            let started = Instant::now();
            let micro_batches = &updates[self.step];
            let trained_total: usize = micro_batches
                .iter()
                .flat_map(|mb| mb.iter().flatten())
                .map(|&i| examples[i].trained.iter().skip(1).filter(|t| **t).count())
                .sum();
            let loss_scale = self.loss_scale.map_or(1.0, |s| s.factor);
            let mut grads: Option<GradStore> = None;
            let (mut loss_sum, mut tokens, mut trained) = (0f64, 0, 0);
            for (micro_index, micro) in micro_batches.iter().enumerate() {
                self.set_dropout(Some(micro_batch_seed(
                    self.config.seed,
                    self.step,
                    micro_index,
                )));
                let rows: Vec<Vec<&TokenizedExample>> = micro
                    .iter()
                    .map(|r| r.iter().map(|&i| &examples[i]).collect())
                    .collect();
                let (batch, logits) = self.forward_batch(&rows)?;
                // Token-weighted so that accumulation equals one big batch.
                let share = batch.trained_tokens as f64 / trained_total.max(1) as f64;
                let loss =
                    (masked_cross_entropy(&logits, &batch.targets, &batch.weights)? * share)?;
                loss_sum += loss.to_scalar::<f32>()? as f64;
                let micro_grads = (loss * loss_scale)?.backward()?;
                grads = Some(match grads {
                    None => micro_grads,
                    Some(mut acc) => {
                        for (_, var) in &self.model.params {
                            if let Some(g) = micro_grads.get(var.as_tensor()) {
                                let sum = match acc.get(var.as_tensor()) {
                                    Some(a) => (a + g)?,
                                    None => g.clone(),
                                };
                                acc.insert(var.as_tensor(), sum);
                            }
                        }
                        acc
                    }
                });
                tokens += batch.tokens;
                trained += batch.trained_tokens;
            }
            let lr = learning_rate(
                self.config.schedule,
                self.config.lr,
                self.step,
                total,
                warmup,
            );
            let grads = grads.context("an update without batches")?;
            let grad_norm =
                self.optimizer
                    .step(&grads, lr, self.config.max_grad_norm, 1.0 / loss_scale)?;
            let overflow = !grad_norm.is_finite();
            match &mut self.loss_scale {
                Some(scale) => scale.record(!overflow)?,
                None if overflow => bail!("the gradient norm is {grad_norm}: training diverged"),
                None => {}
            }
            self.step += 1;
            let elapsed = started.elapsed().as_secs_f64();
            let eval_loss = match &self.eval {
                Some((eval, every))
                    if self.step == last || (*every > 0 && self.step.is_multiple_of(*every)) =>
                {
                    Some(self.evaluate(eval)?)
                }
                _ => None,
            };
            let metrics = StepMetrics {
                step: self.step,
                epoch: (self.step - 1) / updates_per_epoch.max(1),
                loss: loss_sum,
                lr,
                grad_norm: if overflow { 0.0 } else { grad_norm },
                tokens,
                trained_tokens: trained,
                tokens_per_second: tokens as f64 / elapsed,
                eval_loss,
                loss_scale: self.loss_scale.is_some().then_some(loss_scale),
                overflow,
            };
            // One write per line: a kill leaves at most one torn line, cut off on resume.
            let mut line = serde_json::to_string(&metrics)?;
            line.push('\n');
            metrics_file.write_all(line.as_bytes())?;
            on_step(&metrics);
            out.push(metrics);
            let save_now =
                self.config.save_every > 0 && self.step.is_multiple_of(self.config.save_every);
            if save_now || self.step == last {
                // The metrics of every update a checkpoint holds are on disk before it.
                metrics_file.sync_data()?;
                self.save_checkpoint()?;
            }
        }
        Ok(out)
    }

    /// Writes `checkpoint-N/` durably: everything goes into `.checkpoint-N.tmp/`
    /// (`progress.json` last), which is synced and renamed into place (see
    /// [`seqit_core::durable::replace_dir`]). Earlier checkpoints are kept, so a kill at
    /// any moment leaves the previous complete checkpoint, or this one, to resume from.
    fn save_checkpoint(&self) -> Result<()> {
        let final_dir = self.output.join(checkpoint_name(self.step));
        let tmp = self
            .output
            .join(format!(".{}.tmp", checkpoint_name(self.step)));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let weights: std::collections::HashMap<String, Tensor> =
            self.trained_weights()?.into_iter().collect();
        candle_core::safetensors::save(&weights, tmp.join(WEIGHTS_FILE))?;
        let mut state = std::collections::HashMap::new();
        let moments = self.optimizer.moments()?;
        for ((name, _), Moments { m, v }) in self.model.params.iter().zip(moments) {
            let n = m.len();
            state.insert(format!("{name}.m"), Tensor::from_vec(m, n, &Device::Cpu)?);
            state.insert(format!("{name}.v"), Tensor::from_vec(v, n, &Device::Cpu)?);
        }
        candle_core::safetensors::save(&state, tmp.join(OPTIMIZER_FILE))?;
        let progress = Progress {
            step: self.step,
            config: self.config.clone(),
            loss_scale: self.loss_scale,
        };
        std::fs::write(
            tmp.join(PROGRESS_FILE),
            serde_json::to_string_pretty(&progress)?,
        )?;
        seqit_core::durable::replace_dir(&tmp, &final_dir)
            .with_context(|| format!("cannot write the checkpoint `{}`", final_dir.display()))?;
        Ok(())
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let progress: Progress =
            serde_json::from_str(&std::fs::read_to_string(dir.join("progress.json"))?)
                .with_context(|| format!("`{}` is not a valid checkpoint", dir.display()))?;
        // Settings that shape the loss curve must match; when to stop or save may differ.
        let comparable = |c: &TrainConfig| TrainConfig {
            max_steps: None,
            save_every: 0,
            ..c.clone()
        };
        if comparable(&progress.config) != comparable(&self.config) {
            bail!(
                "the checkpoint `{}` was made with other training settings; resume with the same settings",
                dir.display()
            );
        }
        let weights =
            candle_core::safetensors::load(dir.join("weights.safetensors"), &Device::Cpu)?;
        let state =
            candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)?;
        let (mut restored, mut moments) = (Vec::new(), Vec::new());
        for (name, _) in &self.model.params {
            let w = weights
                .get(name)
                .with_context(|| format!("checkpoint lacks `{name}`"))?;
            restored.push(w.clone());
            let get = |suffix: &str| -> Result<Vec<f32>> {
                Ok(state
                    .get(&format!("{name}.{suffix}"))
                    .context("optimizer state incomplete")?
                    .to_vec1()?)
            };
            moments.push(Moments {
                m: get("m")?,
                v: get("v")?,
            });
        }
        self.optimizer
            .restore(restored, moments, progress.step as u64)?;
        self.step = progress.step;
        if progress.loss_scale.is_some() {
            self.loss_scale = progress.loss_scale;
        }
        // Metrics of updates after the checkpoint were lost with the process: cut them
        // (and a torn last line) off the end so the file holds each step once. The file
        // is only ever appended to and truncated, never rewritten.
        truncate_metrics(&self.output.join("metrics.jsonl"), self.step)?;
        Ok(())
    }
}

const WEIGHTS_FILE: &str = "weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const PROGRESS_FILE: &str = "progress.json";

/// `checkpoint-00000042`.
fn checkpoint_name(step: usize) -> String {
    format!("checkpoint-{step:08}")
}

/// The step of a `checkpoint-N` directory name.
fn checkpoint_step(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("checkpoint-")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Whether `dir` holds every file of a checkpoint and a readable `progress.json` for
/// `step`.
fn is_complete_checkpoint(dir: &Path, step: usize) -> bool {
    let progress = std::fs::read_to_string(dir.join(PROGRESS_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Progress>(&text).ok());
    progress.is_some_and(|p| p.step == step)
        && [WEIGHTS_FILE, OPTIMIZER_FILE]
            .iter()
            .all(|f| dir.join(f).is_file())
}

/// The newest complete checkpoint in `output`. Checkpoints are renamed into place only
/// when complete, so an incomplete one can only come from outside (a copy cut short);
/// it is passed over for the one before.
pub fn latest_checkpoint(output: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = checkpoint_step(e.file_name().to_str()?)?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    Ok(found
        .into_iter()
        .rev()
        .find(|(step, dir)| is_complete_checkpoint(dir, *step))
        .map(|(_, dir)| dir))
}

/// Removes checkpoints a killed run was still writing (`.checkpoint-N.tmp/` and
/// directories set aside while one was replaced).
fn remove_staged_checkpoints(output: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(output) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".checkpoint-")
            && seqit_core::durable::is_temp_name(&name)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove `{}`", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Cuts `metrics.jsonl` back to its complete lines of steps up to `step`.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    use std::io::BufRead;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let total = file.metadata()?.len();
    let mut reader = std::io::BufReader::new(file);
    let (mut keep, mut line) = (0u64, Vec::new());
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        match serde_json::from_slice::<StepMetrics>(&line) {
            Ok(m) if m.step <= step => keep += n as u64,
            _ => break,
        }
    }
    if keep < total {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_checkpoint(output: &Path, step: usize, complete: bool) -> PathBuf {
        let dir = output.join(checkpoint_name(step));
        std::fs::create_dir_all(&dir).unwrap();
        for file in [WEIGHTS_FILE, OPTIMIZER_FILE] {
            std::fs::write(dir.join(file), b"").unwrap();
        }
        if complete {
            let progress = Progress {
                step,
                config: TrainConfig::default(),
                loss_scale: None,
            };
            std::fs::write(
                dir.join(PROGRESS_FILE),
                serde_json::to_string(&progress).unwrap(),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn resume_takes_the_newest_complete_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        assert_eq!(latest_checkpoint(out).unwrap(), None);
        write_checkpoint(out, 999_999_999, true);
        // Steps compare as numbers ("1000000000" sorts before "999999999" as text).
        let newest = write_checkpoint(out, 1_000_000_000, true);
        write_checkpoint(out, 1_000_000_001, false); // no progress.json: passed over
        std::fs::create_dir_all(out.join(".checkpoint-1000000002.tmp")).unwrap();
        std::fs::create_dir_all(out.join("checkpoint-x")).unwrap();
        assert_eq!(latest_checkpoint(out).unwrap(), Some(newest));
        remove_staged_checkpoints(out).unwrap();
        assert!(!out.join(".checkpoint-1000000002.tmp").exists());
        assert!(out.join("checkpoint-x").exists());
    }

    #[test]
    fn metrics_are_cut_back_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let line = |step| {
            let m = StepMetrics {
                step,
                epoch: 0,
                loss: 1.0,
                lr: 0.1,
                grad_norm: 1.0,
                tokens: 4,
                trained_tokens: 2,
                tokens_per_second: 1.0,
                eval_loss: None,
                loss_scale: None,
                overflow: false,
            };
            format!("{}\n", serde_json::to_string(&m).unwrap())
        };
        let kept = format!("{}{}", line(1), line(2));
        let torn = &line(4)[..20];
        std::fs::write(&path, format!("{kept}{}{torn}", line(3))).unwrap();
        truncate_metrics(&path, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        // Nothing after the checkpoint: the file is left as it is; a torn tail goes.
        std::fs::write(&path, format!("{kept}{torn}")).unwrap();
        truncate_metrics(&path, 5).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        truncate_metrics(&dir.path().join("none.jsonl"), 1).unwrap();
    }
}
