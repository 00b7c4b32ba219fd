//! Chat templates: the Jinja template a model ships with (GGUF's
//! `tokenizer.chat_template`, `tokenizer_config.json`'s `chat_template`), rendered by
//! `minijinja` with Python string methods (`pycompat`), as Hugging Face renders it.

use super::LlmError;
use minijinja::{context, Environment, Error, ErrorKind};

/// Instructions a chat template may run per rendering: far more than real templates
/// need (a few thousand for a long conversation), and a bound on a hostile one.
const TEMPLATE_FUEL: u64 = 10_000_000;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A parsed chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Parses `source`; `bos` and `eos` are the texts of the tokens the template may use.
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate, LlmError> {
        let mut env = Environment::new();
        // The template comes from the model file: a hostile one must not run forever.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| LlmError::Template(e.to_string()))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The prompt for `messages`, ending where the assistant's reply starts.
    pub fn render(&self, messages: &[Message]) -> Result<String, LlmError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| LlmError::Template(e.to_string()))?;
        template
            .render(context! {
                messages => messages.iter().map(|m| context! { role => m.role.clone(), content => m.content.clone() }).collect::<Vec<_>>(),
                add_generation_prompt => true,
                bos_token => self.bos.clone(),
                eos_token => self.eos.clone(),
            })
            .map_err(|e| LlmError::Template(e.to_string()))
    }
}
