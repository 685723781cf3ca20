//! Every TOML-level problem of a policy file at once, as a compiler reports them: all syntax
//! errors, else every unknown key and wrongly typed value. serde stops at the first of the
//! latter, so each one found has its entry blanked out (spaces, newlines kept, so every
//! offset and line stays put) and the text is deserialized again.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Enough for any file a person wrote; a bound on the re-parsing.
const MAX_PROBLEMS: usize = 50;

/// One problem: where in the text (empty when unknown), the dotted name of its entry
/// (empty for a syntax error), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TomlProblem {
    pub span: Range<usize>,
    pub key: String,
    pub message: String,
}

impl From<toml::de::Error> for TomlProblem {
    fn from(error: toml::de::Error) -> Self {
        TomlProblem {
            span: error.span().unwrap_or(0..0),
            key: String::new(),
            message: error.message().trim().to_owned(),
        }
    }
}

/// `text` deserialized, or every problem found in it, in the order of the text.
pub(super) fn deserialize<T: DeserializeOwned>(text: &str) -> Result<T, Vec<TomlProblem>> {
    let (_, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax.into_iter().map(TomlProblem::from).collect());
    }
    let mut work = text.to_owned();
    let mut problems: Vec<TomlProblem> = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let problem = match toml::from_str::<T>(&work) {
            Ok(value) if problems.is_empty() => return Ok(value),
            Ok(_) => break,
            Err(error) => TomlProblem::from(error),
        };
        // The same problem again means blanking did not remove it: stop there.
        if problems
            .iter()
            .any(|p| p.span == problem.span && p.message == problem.message)
        {
            break;
        }
        let entry = match DeTable::parse(&work) {
            Ok(table) if problem.span != (0..0) => {
                entry_at(table.get_ref(), problem.span.start, "")
            }
            _ => None,
        };
        let Some((key, pieces)) = entry else {
            problems.push(problem);
            break;
        };
        problems.push(TomlProblem { key, ..problem });
        blank(&mut work, &pieces);
    }
    problems.sort_by_key(|problem| problem.span.start);
    Err(problems)
}

/// The dotted name (`source[2].paths`, arrays of tables counted from 1) and the pieces of
/// text of the innermost entry at `offset`: `key = value` for an inline entry; a table's
/// header and each of its entries for a `[table]` or `[[array]]`, whose parts may be
/// spread over the file.
fn entry_at(
    table: &DeTable<'_>,
    offset: usize,
    prefix: &str,
) -> Option<(String, Vec<Range<usize>>)> {
    for (key, value) in table.iter() {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let inner =
            match value.get_ref() {
                DeValue::Table(inner) => entry_at(inner, offset, &name),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item
                    .get_ref()
                {
                    DeValue::Table(inner) => entry_at(inner, offset, &format!("{name}[{}]", i + 1)),
                    _ => None,
                }),
                _ => None,
            };
        if inner.is_some() {
            return inner;
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            let mut pieces = Vec::new();
            all_pieces(key, value, &mut pieces);
            return Some((name, pieces));
        }
    }
    None
}

/// Every piece of text of one entry (see [`entry_at`]).
fn all_pieces(
    key: &Spanned<impl Sized>,
    value: &Spanned<DeValue<'_>>,
    pieces: &mut Vec<Range<usize>>,
) {
    // A header (`[name]`, `[[name]]`) starts before the key it names; an inline entry's
    // key comes before its value.
    if key.span().start < value.span().start {
        pieces.push(key.span().start..value.span().end);
        return;
    }
    let tables: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => vec![value],
    };
    for table in tables {
        pieces.push(table.span());
        if let DeValue::Table(inner) = table.get_ref() {
            for (key, value) in inner.iter() {
                all_pieces(key, value, pieces);
            }
        }
    }
}

/// Overwrites each piece with spaces, keeping line breaks.
fn blank(text: &mut String, pieces: &[Range<usize>]) {
    let mut bytes = std::mem::take(text).into_bytes();
    for piece in pieces {
        if let Some(range) = bytes.get_mut(piece.clone()) {
            for byte in range.iter_mut().filter(|b| !matches!(b, b'\n' | b'\r')) {
                *byte = b' ';
            }
        }
    }
    // Whole characters were replaced by ASCII spaces, so this cannot fail; if it did, the
    // text would be left empty and the next parse would report nothing new.
    *text = String::from_utf8(bytes).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: Option<String>,
        count: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        settings: Option<Item>,
        #[serde(default, rename = "item")]
        items: Vec<Item>,
    }

    fn lines(text: &str, problems: &[TomlProblem]) -> Vec<(usize, String)> {
        problems
            .iter()
            .map(|p| {
                (
                    text[..p.span.start].matches('\n').count() + 1,
                    p.message.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_found() {
        let text = "[settings]\nname = \"x\"\nbogus = [1,\n  2]\n\n[extra]\nq = 1\n\n\
                    [[item]]\nname = \"é\"\ncount = \"three\"\nother = 3\n\n[[item]]\ncount = 2\n";
        let problems = deserialize::<File>(text).unwrap_err();
        let found = lines(text, &problems);
        let found: Vec<(usize, &str)> = found
            .iter()
            .map(|(line, m)| (*line, m.split(',').next().unwrap_or("")))
            .collect();
        assert_eq!(
            found,
            [
                (3, "unknown field `bogus`"),
                (6, "unknown field `extra`"),
                (11, "invalid type: string \"three\""),
                (12, "unknown field `other`"),
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn every_syntax_error_is_found_and_a_good_file_deserializes() {
        let text = "[settings\nname = \"x\"\ncount = = 3\n";
        let problems = deserialize::<File>(text).unwrap_err();
        assert!(problems.len() >= 2, "{problems:#?}");
        assert_eq!(lines(text, &problems)[0].0, 1);
        assert!(lines(text, &problems).iter().any(|(line, _)| *line == 3));

        let file = deserialize::<File>("[settings]\ncount = 1\n[[item]]\nname = \"a\"\n").unwrap();
        assert_eq!(file.settings.and_then(|s| s.count), Some(1));
        assert_eq!(file.items.len(), 1);
    }
}
