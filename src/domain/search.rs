//! Full-text search (`search_emails`): what a user's query means to the FTS5 index, and how a
//! snippet comes back. The user never writes FTS5 syntax: each word is a quoted phrase (so `AND`,
//! `NEAR`, `*`, `:` and quotes are just text), all words must match, and a word ending in `*` is
//! a prefix. Snippets arrive with private-use markers around the matches and leave as
//! HTML-escaped text with `<mark>` around them, so a page can show them as they are.

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// The most words a query may have.
pub const MAX_TERMS: usize = 16;
/// The deepest a `cursor` (an offset into the ranked results) may go.
pub const MAX_OFFSET: u32 = 1000;
/// Around a match in a snippet (FTS5's `snippet()` start and end markers).
pub const MARK_START: char = '\u{E000}';
pub const MARK_END: char = '\u{E001}';

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Empty,
    TooLong,
    TooManyTerms,
}

impl QueryError {
    pub fn message(&self) -> String {
        match self {
            QueryError::Empty => "`q` needs at least one word to search for".into(),
            QueryError::TooLong => format!("`q` is at most {MAX_QUERY_CHARS} characters"),
            QueryError::TooManyTerms => format!("`q` has at most {MAX_TERMS} words"),
        }
    }
}

/// The FTS5 MATCH expression for what the user typed.
pub fn fts_query(q: &str) -> Result<String, QueryError> {
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(QueryError::TooLong);
    }
    let mut terms = vec![];
    for word in q.split_whitespace() {
        let (stem, prefix) = match word.strip_suffix('*') {
            Some(s) => (s.trim_end_matches('*'), true),
            None => (word, false),
        };
        // Only letters and digits make tokens; a word of punctuation alone matches nothing.
        if !stem.chars().any(char::is_alphanumeric) {
            continue;
        }
        let quoted = format!("\"{}\"", stem.replace('"', "\"\""));
        terms.push(if prefix { format!("{quoted}*") } else { quoted });
    }
    if terms.is_empty() {
        return Err(QueryError::Empty);
    }
    if terms.len() > MAX_TERMS {
        return Err(QueryError::TooManyTerms);
    }
    Ok(terms.join(" "))
}

/// A snippet from the index as HTML: the text escaped, each match in `<mark>…</mark>`. Markers
/// the text itself carried are dropped (the index holds them only where it put them).
pub fn snippet_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 16);
    let mut open = false;
    for c in raw.chars() {
        match c {
            MARK_START if !open => {
                out.push_str("<mark>");
                open = true;
            }
            MARK_END if open => {
                out.push_str("</mark>");
                open = false;
            }
            MARK_START | MARK_END => {}
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

/// The cursor of the page after `offset + taken` results, if there may be more.
pub fn next_cursor(offset: u32, taken: usize, limit: u32, more: bool) -> Option<String> {
    let next = offset + taken as u32;
    (more && taken as u32 == limit && next <= MAX_OFFSET).then(|| next.to_string())
}

/// A `cursor` back into an offset (it is the decimal offset; opaque to users).
pub fn parse_cursor(c: &str) -> Option<u32> {
    c.parse::<u32>().ok().filter(|n| *n <= MAX_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_a_quoted_phrase_and_fts_syntax_is_just_text() {
        assert_eq!(fts_query("contract renewal").unwrap(), r#""contract" "renewal""#);
        assert_eq!(fts_query("  invoice  ").unwrap(), r#""invoice""#);
        assert_eq!(fts_query("a OR b NEAR(c) col:x").unwrap(), r#""a" "OR" "b" "NEAR(c)" "col:x""#);
        assert_eq!(fts_query(r#"say "hi""#).unwrap(), r#""say" """hi""""#);
        assert_eq!(fts_query("ada@example.com").unwrap(), r#""ada@example.com""#);
    }

    #[test]
    fn a_trailing_star_is_a_prefix() {
        assert_eq!(fts_query("contr* x**").unwrap(), r#""contr"* "x"*"#);
        assert_eq!(fts_query("*").unwrap_err(), QueryError::Empty, "a star alone is no word");
    }

    #[test]
    fn empty_long_and_wordy_queries_are_refused() {
        assert_eq!(fts_query("").unwrap_err(), QueryError::Empty);
        assert_eq!(fts_query(" -- !! ").unwrap_err(), QueryError::Empty);
        assert_eq!(fts_query(&"a".repeat(201)).unwrap_err(), QueryError::TooLong);
        assert!(fts_query(&"é".repeat(200)).is_ok(), "characters, not bytes");
        assert_eq!(fts_query(&"w ".repeat(17)).unwrap_err(), QueryError::TooManyTerms);
        assert!(fts_query(&"w ".repeat(16)).is_ok());
    }

    #[test]
    fn snippets_are_escaped_with_marks_around_matches() {
        let raw = format!("the {MARK_START}contract{MARK_END} <b>&</b> \"x\"");
        assert_eq!(snippet_html(&raw), "the <mark>contract</mark> &lt;b&gt;&amp;&lt;/b&gt; &quot;x&quot;");
        assert_eq!(snippet_html(&format!("{MARK_START}open")), "<mark>open</mark>", "an open mark is closed");
        assert_eq!(snippet_html(&format!("{MARK_END}stray{MARK_START}{MARK_START}x{MARK_END}")), "stray<mark>x</mark>");
    }

    #[test]
    fn cursors_are_offsets_within_bounds() {
        assert_eq!(next_cursor(0, 20, 20, true), Some("20".into()));
        assert_eq!(next_cursor(0, 7, 20, false), None);
        assert_eq!(next_cursor(990, 20, 20, true), None, "past the deepest page");
        assert_eq!(parse_cursor("40"), Some(40));
        assert_eq!(parse_cursor("1001"), None);
        assert_eq!(parse_cursor("-1"), None);
        assert_eq!(parse_cursor("msg_x"), None);
    }
}
