//! The one-line JSON of `sockloop bench --json`, written member by member:
//! flat objects of numbers and strings need no serialisation crate.

use std::fmt::{Display, Write};

/// A JSON object being written, its members in the order they are given.
pub(super) struct JsonObject(String);

impl JsonObject {
    /// An object with no members yet.
    pub(super) fn new() -> JsonObject {
        JsonObject(String::from("{"))
    }

    /// A member whose value is written as `value` displays itself: for
    /// integers and booleans.
    pub(super) fn value(&mut self, key: &str, value: impl Display) -> &mut Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(self.0, "\"{key}\":{value}");
        self
    }

    /// As [`value`](Self::value), or `null` for `None`.
    pub(super) fn value_or_null(&mut self, key: &str, value: Option<impl Display>) -> &mut Self {
        match value {
            Some(value) => self.value(key, value),
            None => self.value(key, "null"),
        }
    }

    /// A number with `places` decimals.
    pub(super) fn decimal(&mut self, key: &str, value: f64, places: usize) -> &mut Self {
        self.value(key, format_args!("{value:.places$}"))
    }

    /// As [`decimal`](Self::decimal), or `null` for `None`.
    pub(super) fn decimal_or_null(
        &mut self,
        key: &str,
        value: Option<f64>,
        places: usize,
    ) -> &mut Self {
        match value {
            Some(value) => self.decimal(key, value, places),
            None => self.value(key, "null"),
        }
    }

    /// A string, quoted and escaped.
    pub(super) fn string(&mut self, key: &str, text: &str) -> &mut Self {
        self.value(key, json_string(text))
    }

    /// An array of strings, each quoted and escaped.
    pub(super) fn strings(&mut self, key: &str, texts: &[String]) -> &mut Self {
        let quoted: Vec<String> = texts.iter().map(|text| json_string(text)).collect();
        self.value(key, format_args!("[{}]", quoted.join(",")))
    }

    /// The object's text, closed.
    pub(super) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `text` as a JSON string, quoted and escaped.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_valid_json_strings() {
        assert_eq!(json_string("a \"b\" \\ c\n"), r#""a \"b\" \\ c\u000a""#);
    }

    #[test]
    fn members_are_written_in_order_with_their_formats() {
        let mut json = JsonObject::new();
        json.string("mode", "idle")
            .value("conns", 3)
            .value_or_null("rate", None::<u64>)
            .decimal("p50_us", 1.25, 1)
            .decimal_or_null("served_s", Some(0.5), 3)
            .strings("errors", &["x".to_owned(), "y\"".to_owned()]);
        assert_eq!(
            json.finish(),
            r#"{"mode":"idle","conns":3,"rate":null,"p50_us":1.2,"served_s":0.500,"errors":["x","y\""]}"#
        );
        assert_eq!(JsonObject::new().finish(), "{}");
    }
}
