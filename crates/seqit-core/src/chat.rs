use serde::{Deserialize, Serialize};

/// Who speaks a chat turn. Unknown roles from user data are kept verbatim so that chat
/// templates which understand them (e.g. `tool`) still render them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt: instructions that frame the whole conversation.
    System,
    /// A turn written by the person (or dataset) asking.
    User,
    /// A turn written by the model.
    Assistant,
    /// Any other role name (e.g. `tool`), kept verbatim.
    #[serde(untagged)]
    Other(String),
}

impl Role {
    /// The role's wire name (`system`, `user`, `assistant`, or the unknown name as given).
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Other(name) => name,
        }
    }
}

/// One turn of a conversation.
///
/// `images` are shown to the model with the text, as URLs (usually `data:` URLs with
/// the image inline). Only remote chat backends can send them (as OpenAI content parts);
/// the field is left out of the serialized message when empty, so text-only messages
/// (and every cache key made from them) look exactly as they did before images existed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks the turn.
    pub role: Role,
    /// The turn's text.
    pub content: String,
    /// Image URLs shown with the text; empty for text-only turns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl ChatMessage {
    /// A text-only message from this speaker.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            images: Vec::new(),
        }
    }
    /// The same message with an image (a URL, e.g. `data:image/png;base64,...`) after its text.
    pub fn with_image(mut self, url: impl Into<String>) -> Self {
        self.images.push(url.into());
        self
    }
    /// A text-only system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    /// A text-only user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// A text-only assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_roles_round_trip() {
        let msg: ChatMessage = serde_json::from_str(r#"{"role":"tool","content":"42"}"#).unwrap();
        assert_eq!(msg.role, Role::Other("tool".into()));
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"role":"tool","content":"42"}"#
        );
        let msg: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(msg.role, Role::User);
    }

    #[test]
    fn text_only_messages_serialize_without_images() {
        let msg = ChatMessage::user("hi");
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"role":"user","content":"hi"}"#
        );
        let msg = msg.with_image("data:image/png;base64,AAAA");
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"role":"user","content":"hi","images":["data:image/png;base64,AAAA"]}"#
        );
        assert_eq!(serde_json::from_str::<ChatMessage>(&json).unwrap(), msg);
    }
}
