//! Chat templates: the Jinja text shipped with a model, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it (trim_blocks, lstrip_blocks, Python
//! string methods, `raise_exception`, `strftime_now`, extra variables such as Qwen3's
//! `enable_thinking`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind};
use seqit_core::ChatMessage;
use serde_json::Value as Json;

use crate::tokenizer::read_tokenizer_config;

const TEMPLATE_NAME: &str = "chat";

/// The variables the renderer sets itself, which [`TemplateVariables`] may not replace.
const RENDERER_VARIABLES: [&str; 4] = [
    "messages",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

/// Extra variables of a chat template by name, what transformers'
/// `apply_chat_template(**kwargs)` and vLLM's `chat_template_kwargs` pass: e.g.
/// `enable_thinking = false`, which Qwen3's template reads to close its reasoning block
/// before the answer.
pub type TemplateVariables = BTreeMap<String, Json>;

/// One `NAME=VALUE` of the command line: VALUE as JSON when it is JSON (`false`, `3`,
/// `{"a": 1}`), else as a string (`mode=brief`).
pub fn parse_template_variable(arg: &str) -> Result<(String, Json), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}`: expected NAME=VALUE, e.g. enable_thinking=false"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_string()));
    Ok((name.trim().to_string(), value))
}

/// A model's Jinja chat template, parsed once and rendered per conversation like
/// transformers' `apply_chat_template`.
pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    variables: TemplateVariables,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Parses `source`; `bos_token` and `eos_token` fill the template's variables of those
    /// names (empty when `None`). Fails when the template does not parse.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("static syntax configuration"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            // Templates use it for "today's date" lines; a fixed date keeps rendered
            // prompts, and so cache keys and training data, reproducible.
            format_fixed_date(&format)
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| anyhow!("the chat template does not parse: {e}"))?;
        Ok(Self {
            source: source.to_string(),
            env,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
            variables: TemplateVariables::new(),
        })
    }

    /// The same template rendered with `variables` set too. Fails for a name that is not
    /// an identifier or that the renderer sets itself (`messages`, ...).
    pub fn with_variables(mut self, variables: TemplateVariables) -> Result<Self> {
        check_variable_names(&variables)?;
        self.variables = variables;
        Ok(self)
    }

    /// The extra variables it is rendered with.
    pub fn variables(&self) -> &TemplateVariables {
        &self.variables
    }

    /// Reads the template of a Hugging Face directory: `chat_template.jinja`, or the
    /// `chat_template` field of `tokenizer_config.json` (a string, or a list of named
    /// templates of which `default` is used).
    pub fn from_hf_dir(dir: &Path) -> Result<Option<String>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            return Ok(Some(std::fs::read_to_string(&jinja)?));
        }
        let config = read_tokenizer_config(dir)?;
        Ok(match config.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or(named.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            _ => None,
        })
    }

    /// The template's Jinja source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the
    /// assistant's reply begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &TemplateVariables::new())
    }

    /// [`Self::render`] with `extra` variables over the template's own (one request's
    /// `chat_template_kwargs`). Fails for names [`Self::with_variables`] refuses.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &TemplateVariables,
    ) -> Result<String> {
        check_variable_names(extra)?;
        let mut variables = self.variables.clone();
        variables.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .expect("added in new()");
        let messages: Vec<Json> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        template
            .render(minijinja::context! {
                messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                ..minijinja::Value::from(minijinja::value::Serde(&variables))
            })
            .map_err(|e| anyhow!("rendering the chat template failed: {e}"))
            .context("chat template")
    }
}

/// Refuses a name that is not an identifier or that the renderer sets itself.
fn check_variable_names(variables: &TemplateVariables) -> Result<()> {
    for name in variables.keys() {
        let identifier = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !identifier {
            bail!("chat template variable `{name}` is not a name (letters, digits, `_`)");
        }
        if RENDERER_VARIABLES.contains(&name.as_str()) {
            bail!("chat template variable `{name}` is set by seqit and cannot be replaced");
        }
    }
    Ok(())
}

/// `strftime` for the handful of directives chat templates use, on a fixed date
/// (26 July 2024, the date Llama 3.1 templates default to).
fn format_fixed_date(format: &str) -> String {
    format
        .replace("%d", "26")
        .replace("%b", "Jul")
        .replace("%B", "July")
        .replace("%Y", "2024")
        .replace("%m", "07")
        .replace("%y", "24")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_default_system() {
        let t = ChatTemplate::new(CHATML, None, None).unwrap();
        let text = t.render(&[ChatMessage::user("Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let src = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('must start with user') }}{% endif %}{{ bos_token }}{% for m in messages %}{{ m['content'].strip().upper() }}{% endfor %}";
        let t = ChatTemplate::new(src, Some("<s>"), None).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("  ab ")], false).unwrap(),
            "<s>AB"
        );
        let err = t.render(&[ChatMessage::assistant("x")], false).unwrap_err();
        assert!(
            format!("{err:#}").contains("must start with user"),
            "{err:#}"
        );
    }

    #[test]
    fn trims_blocks_like_transformers() {
        let src = "{% for m in messages %}\n  {{ m['content'] }}\n{% endfor %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
                .unwrap(),
            "  a\n  b\n"
        );
    }

    /// Qwen3's switch, as its template spells it.
    const THINKING_SWITCH: &str = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}";

    #[test]
    fn variables_reach_the_template() {
        let messages = [ChatMessage::user("Hi")];
        let plain = ChatTemplate::new(THINKING_SWITCH, None, None).unwrap();
        assert_eq!(
            plain.render(&messages, true).unwrap(),
            "<|user|>Hi<|assistant|>"
        );
        let off = ChatTemplate::new(THINKING_SWITCH, None, None)
            .unwrap()
            .with_variables([parse_template_variable("enable_thinking=false").unwrap()].into())
            .unwrap();
        assert_eq!(
            off.render(&messages, true).unwrap(),
            "<|user|>Hi<|assistant|><think></think>"
        );
        // A request's variables win over the template's own.
        let on: TemplateVariables = [("enable_thinking".to_string(), Json::Bool(true))].into();
        assert_eq!(
            off.render_with(&messages, true, &on).unwrap(),
            "<|user|>Hi<|assistant|>"
        );
        // A string "false" is not the boolean false.
        let text = ChatTemplate::new(THINKING_SWITCH, None, None)
            .unwrap()
            .with_variables([("enable_thinking".to_string(), Json::from("false"))].into())
            .unwrap();
        assert_eq!(
            text.render(&messages, true).unwrap(),
            "<|user|>Hi<|assistant|>"
        );
    }

    #[test]
    fn variable_arguments_parse_as_json_or_text() {
        let parse = |arg| parse_template_variable(arg).unwrap();
        assert_eq!(
            parse("enable_thinking=false"),
            ("enable_thinking".into(), Json::Bool(false))
        );
        assert_eq!(parse("depth=3"), ("depth".into(), Json::from(3)));
        assert_eq!(parse("mode=brief"), ("mode".into(), Json::from("brief")));
        assert_eq!(parse(r#"tools=[{"a":1}]"#).1, serde_json::json!([{"a": 1}]));
        assert_eq!(
            parse_template_variable("enable_thinking").unwrap_err(),
            "`enable_thinking`: expected NAME=VALUE, e.g. enable_thinking=false"
        );
    }

    #[test]
    fn renderer_variables_and_non_names_are_refused() {
        for (name, message) in [
            (
                "messages",
                "chat template variable `messages` is set by seqit and cannot be replaced",
            ),
            (
                "a-b",
                "chat template variable `a-b` is not a name (letters, digits, `_`)",
            ),
            (
                "",
                "chat template variable `` is not a name (letters, digits, `_`)",
            ),
        ] {
            let err = ChatTemplate::new(CHATML, None, None)
                .unwrap()
                .with_variables([(name.to_string(), Json::Null)].into())
                .unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }
}
