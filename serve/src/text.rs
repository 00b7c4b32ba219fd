//! From a choice's tokens to the text a client sees: characters are whole before they
//! are sent, a stop string ends the choice (and is not sent), and text that may be the
//! start of a stop string waits until it is known not to be.

use smelt_frontend::llm::{stop_prefix_len, TextStream, Tokenizer};

/// One choice's text so far.
#[derive(Default)]
pub struct ChoiceText {
    stream: TextStream,
    /// The text so far (cut before a stop string once one is seen).
    pub text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Set once the choice is over.
    pub finish: Option<&'static str>,
}

impl ChoiceText {
    /// Adds `token` and returns the text that is now safe to send. Sets `finish` to
    /// `stop` when a stop string appears.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32, stops: &[String]) -> String {
        self.tokens += 1;
        self.text += &self.stream.push(tokenizer, token).unwrap_or_default();
        let from = self.sent;
        // A stop string may straddle what was held back and the new text.
        let search_from = from.saturating_sub(stops.iter().map(String::len).max().unwrap_or(0));
        let search_from = (0..=search_from)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        if let Some(cut) = stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min()
        {
            self.text.truncate(cut);
            self.finish = Some("stop");
            return self.take_rest();
        }
        let safe = self.text.len() - stop_prefix_len(&self.text, stops);
        let out = self.text[from..safe.max(from)].to_string();
        self.sent = safe.max(from);
        out
    }

    /// Ends the choice with `finish` and returns the text still held back.
    pub fn end(&mut self, finish: &'static str) -> String {
        self.finish.get_or_insert(finish);
        self.take_rest()
    }

    fn take_rest(&mut self) -> String {
        let out = self.text[self.sent.min(self.text.len())..].to_string();
        self.sent = self.text.len();
        out
    }
}
