//! Command lines built from typed settings, so that a job's flags are never spelled as
//! string literals a second time: a settings struct that clap parses (field `lora_rank`
//! is `--lora-rank`) and that serializes with `rename_all = "kebab-case"` gives back its
//! own command line through [`ToFlags::to_flags`]. `seqit run` launches stages this way.

use clap::{Args, Command, FromArgMatches};
use serde::Serialize;
use serde_json::Value;

/// Settings that give back the command line that makes clap parse them again, as
/// `seqit run` launches its evaluation stages.
pub trait ToFlags: Args + FromArgMatches + Serialize + Sized {
    /// `--flag value` for every required setting and every other one that differs from
    /// clap's default (so that a default taken from the environment, such as
    /// `SEQIT_PYTHON`, still applies to a setting left alone).
    fn to_flags(&self) -> Vec<String> {
        let Value::Object(mut fields) = serde_json::to_value(self).expect("settings serialize")
        else {
            panic!("settings must serialize to an object");
        };
        let defaults = serde_json::to_value(clap_defaults::<Self>()).expect("settings serialize");
        let command = Self::augment_args(Command::new("settings"));
        let required: Vec<&str> = command
            .get_arguments()
            .filter(|arg| arg.is_required_set())
            .filter_map(|arg| arg.get_long())
            .collect();
        fields.retain(|key, value| {
            required.contains(&key.as_str()) || defaults.get(key) != Some(value)
        });
        to_flags(&fields)
    }
}

impl<T: Args + FromArgMatches + Serialize> ToFlags for T {}

/// `T` as clap fills it from no flags at all: every default, and a placeholder in each
/// required setting (`-`, or its first possible value) for the caller to replace.
pub fn clap_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("settings").no_binary_name(true)).mut_args(|arg| {
        if arg.is_required_set() {
            // A placeholder the value parser accepts: its first possible value, if it
            // has a list of them.
            let placeholder = arg
                .get_possible_values()
                .first()
                .map_or(clap::builder::Str::from("-"), |value| {
                    clap::builder::Str::from(value.get_name().to_string())
                });
            arg.required(false).default_value(placeholder)
        } else {
            arg
        }
    });
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("no flags parse");
    T::from_arg_matches(&matches).expect("defaults fill every setting")
}

/// The flags that make clap parse `settings` back: `--key value` for every field that is
/// set, `--key` alone for a `true` switch, one `--key item` per element of a list.
/// Unset options (`null`) and `false` switches are left out.
///
/// # Panics
/// If `settings` does not serialize to a JSON object of scalars and lists of scalars;
/// settings structs are flat by construction.
pub fn to_flags<T: Serialize>(settings: &T) -> Vec<String> {
    let Value::Object(fields) = serde_json::to_value(settings).expect("settings serialize") else {
        panic!("settings must serialize to an object");
    };
    let mut flags = Vec::new();
    for (key, value) in fields {
        let flag = format!("--{key}");
        match value {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => flags.push(flag),
            Value::Array(items) => {
                for item in items {
                    flags.extend([flag.clone(), scalar(&key, item)]);
                }
            }
            other => {
                let text = scalar(&key, other);
                flags.extend([flag, text]);
            }
        }
    }
    flags
}

/// `#[serde(serialize_with = "seqit_core::flags::as_text")]` for a flag value that
/// clap parses with `FromStr`: it serializes as its `Display` text.
pub fn as_text<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// [`as_text`] for an optional flag value.
pub fn as_optional_text<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

fn scalar(key: &str, value: Value) -> String {
    match value {
        Value::String(text) => text,
        Value::Number(number) => number.to_string(),
        Value::Bool(switch) => switch.to_string(),
        other => panic!("`{key}` is not a flag value: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Example {
        lora_rank: Option<usize>,
        lr: Option<f64>,
        full: bool,
        packing: bool,
        stop: Vec<String>,
        template: Option<String>,
    }

    #[test]
    fn set_fields_become_flags_and_unset_ones_disappear() {
        let flags = to_flags(&Example {
            lora_rank: Some(8),
            lr: Some(2e-5),
            full: true,
            packing: false,
            stop: vec!["a".into(), "b".into()],
            template: None,
        });
        // Field order follows serde_json's map, which sorts keys unless a dependency asks
        // it to keep their order: compare flag by flag.
        let mut pairs: Vec<String> = Vec::new();
        for word in flags {
            match pairs.last_mut() {
                Some(last) if !word.starts_with("--") => *last = format!("{last} {word}"),
                _ => pairs.push(word),
            }
        }
        pairs.sort();
        assert_eq!(
            pairs,
            [
                "--full",
                "--lora-rank 8",
                "--lr 0.00002",
                "--stop a",
                "--stop b"
            ]
        );
    }

    #[derive(clap::Parser, Serialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    struct Required {
        #[arg(long, value_parser = ["trl", "axolotl"])]
        to: String,
        #[arg(long)]
        output: std::path::PathBuf,
        #[arg(long, default_value_t = 8)]
        gpus: usize,
    }

    #[test]
    fn defaults_take_placeholders_and_flags_keep_required_and_changed_values() {
        let mut settings: Required = clap_defaults();
        assert_eq!(settings.to, "trl");
        assert_eq!(settings.gpus, 8);
        settings.to = "axolotl".into();
        settings.output = "out".into();
        let flags = settings.to_flags();
        let parsed = <Required as clap::Parser>::try_parse_from(
            std::iter::once("x".to_string()).chain(flags.iter().cloned()),
        )
        .unwrap();
        assert_eq!(parsed, settings);
        assert!(!flags.contains(&"--gpus".to_string()), "{flags:?}");
    }
}
