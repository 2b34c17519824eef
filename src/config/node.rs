//! The jobs file as an untyped, positioned YAML tree, and the one serde-saphyr pass that builds it.
//!
//! Deserializing straight into typed structs stops at the first unknown field or mistyped value, and a
//! caught nested error cannot be resumed from: serde-saphyr has by then consumed the start of a mapping or
//! sequence but not its body. A [`Node`] accepts every well-formed YAML value, so this pass fails only on
//! what the parser itself cannot get past (syntax, broken aliases, budget limits) and [`super::raw`] can
//! impose the types afterwards, collecting every mismatch.

use std::fmt;

use serde::de::{MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{DuplicateKeyPolicy, NonFiniteFloatPolicy, Spanned};

use super::{split, YamlPass};

/// The stack of the threads that parse YAML. The parse recurses once per level of nesting, up to the
/// budget's 64 levels, and a debug build takes about 35 KiB of stack per level: more than the 2 MiB of a
/// tokio worker or of a default thread, where a reload used to run it (a file nested 60 levels deep ended
/// the process with a stack overflow). Only the pages used are ever touched.
pub(super) const PARSE_STACK_SIZE: usize = 16 * 1024 * 1024;

/// A YAML value as written, before any type is imposed on it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// `~`, `null` or nothing.
    Null,
    /// A plain scalar that YAML reads as a boolean.
    Bool(bool),
    /// A plain scalar that YAML reads as an integer.
    Int(i128),
    /// A plain scalar that YAML reads as a float.
    Float(f64),
    /// Any other scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, entries in file order, duplicates included.
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

/// Parses `source` into a tree; fails only where YAML itself is broken (first such error only).
///
/// A large file is parsed on several threads when its shape allows ([`super::split`]).
pub(super) fn parse(source: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    parse_with(source, YamlPass::Auto)
}

/// [`parse`], on the path `pass` asks for (the result is the same on every path), on a thread with a
/// stack of [`PARSE_STACK_SIZE`].
pub(super) fn parse_with(
    source: &str,
    pass: YamlPass,
) -> Result<Spanned<Node>, serde_saphyr::Error> {
    on_parse_stack(|| parse_here(source, pass))
}

/// Runs `parse` on a thread with a stack of [`PARSE_STACK_SIZE`] and returns what it returns; if no
/// thread can be started, runs it here.
fn on_parse_stack<T: Send>(
    parse: impl FnOnce() -> Result<T, serde_saphyr::Error> + Send,
) -> Result<T, serde_saphyr::Error> {
    let mut slot = Some(parse);
    let taken = &mut slot;
    let outcome = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("leasecron-yaml".into())
            .stack_size(PARSE_STACK_SIZE)
            .spawn_scoped(scope, move || taken.take().map(|parse| parse()));
        spawned.map(|handle| handle.join())
    });
    match outcome {
        Ok(Ok(Some(result))) => result,
        // No thread to be had: parse here, as before.
        Err(_) => match slot.take() {
            Some(parse) => parse(),
            None => Err(thread_failed()),
        },
        // The parser panicked (it does not), or the closure was gone.
        Ok(_) => Err(thread_failed()),
    }
}

fn thread_failed() -> serde_saphyr::Error {
    <serde_saphyr::Error as serde::de::Error>::custom("the YAML parser failed unexpectedly")
}

/// [`parse_with`], on this thread.
fn parse_here(source: &str, pass: YamlPass) -> Result<Spanned<Node>, serde_saphyr::Error> {
    let pieces = match pass {
        YamlPass::Auto => split::pieces_for(source.len()),
        YamlPass::Single => 1,
        YamlPass::Split(pieces) => pieces,
    };
    if pieces > 1 {
        if let Some(root) = split::parse(source, pieces) {
            return Ok(root);
        }
    }
    parse_single(source)
}

/// [`parse`] in one pass over the whole file.
pub(super) fn parse_single(source: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(source, options())
}

/// Parses every document of a `---` separated stream (a manifest), skipping empty ones; positions are
/// those of the whole stream. Fails like [`parse`], and runs on a thread with a large stack as it does.
pub(super) fn parse_documents(source: &str) -> Result<Vec<Spanned<Node>>, serde_saphyr::Error> {
    on_parse_stack(|| serde_saphyr::from_multiple_with_options(source, options()))
}

/// The options of every parse of a jobs file or manifest.
pub(super) fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // Duplicate keys reach `raw`, which reports each one and goes on: serde-saphyr's own check
        // aborts the whole parse.
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        // `.nan` in a string field is a string; only `raw` knows which fields those are.
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
    }
}

// === impl Node ===

impl Node {
    /// How serde would describe this value in an "invalid type" message.
    pub fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Node::Null => Unexpected::Other("null"),
            Node::Bool(b) => Unexpected::Bool(*b),
            Node::Int(n) => match i64::try_from(*n) {
                Ok(n) => Unexpected::Signed(n),
                Err(_) => Unexpected::Other("integer"),
            },
            Node::Float(x) => Unexpected::Float(*x),
            Node::Str(s) => Unexpected::Str(s),
            Node::Seq(_) => Unexpected::Seq,
            Node::Map(_) => Unexpected::Map,
        }
    }
}

/// The text of a scalar as a string field reads it: strings as parsed, other scalars as written.
///
/// `source` is the text `node` was parsed from. A plain `1.10` or `yes` must stay `1.10` and `yes` in a
/// string field, so numbers and booleans are taken from the source rather than re-printed.
pub(super) fn scalar_text(node: &Spanned<Node>, source: &str) -> Option<String> {
    match &node.value {
        Node::Str(s) => Some(s.clone()),
        Node::Bool(b) => Some(written(node, source).unwrap_or_else(|| b.to_string())),
        Node::Int(n) => Some(written(node, source).unwrap_or_else(|| n.to_string())),
        Node::Float(x) => Some(written(node, source).unwrap_or_else(|| x.to_string())),
        Node::Null | Node::Seq(_) | Node::Map(_) => None,
    }
}

/// [`scalar_text`], taking the string out of `node` instead of copying it; a node that is not a scalar
/// is handed back.
pub(super) fn into_scalar_text(
    node: Spanned<Node>,
    source: &str,
) -> Result<Spanned<String>, Spanned<Node>> {
    let (referenced, defined) = (node.referenced, node.defined);
    match node.value {
        Node::Str(s) => Ok(Spanned::new(s, referenced, defined)),
        _ => match scalar_text(&node, source) {
            Some(text) => Ok(Spanned::new(text, referenced, defined)),
            None => Err(node),
        },
    }
}

/// The source text of a one-token scalar, if serde-saphyr recorded its byte span.
fn written(node: &Spanned<Node>, source: &str) -> Option<String> {
    let span = node.defined.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let text = source.get(start..start.checked_add(len)?)?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Int(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Int(n.into()))
    }

    fn visit_i128<E>(self, n: i128) -> Result<Node, E> {
        Ok(Node::Int(n))
    }

    fn visit_u128<E: serde::de::Error>(self, n: u128) -> Result<Node, E> {
        // Past i128::MAX only as an unknown integer: no field takes numbers that large.
        Ok(Node::Int(i128::try_from(n).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E>(self, x: f64) -> Result<Node, E> {
        Ok(Node::Float(x))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Str(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Node, E> {
        Ok(Node::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(root: &'a Spanned<Node>, key: &str) -> &'a Spanned<Node> {
        let Node::Map(entries) = &root.value else {
            panic!("not a mapping: {root:?}");
        };
        entries
            .iter()
            .find(|(k, _)| k.value == Node::Str(key.to_string()))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no key {key}"))
    }

    #[test]
    fn scalars_keep_their_type_and_their_written_text() {
        let source = "a: 1.10\nb: yes\nc: 0x1F\nd: \"q\"\ne: ~\nf: .NaN\ng: plain text\n";
        let root = parse(source).expect("valid YAML");
        assert_eq!(field(&root, "a").value, Node::Float(1.1));
        assert_eq!(field(&root, "b").value, Node::Bool(true));
        assert_eq!(field(&root, "c").value, Node::Int(31));
        assert_eq!(field(&root, "e").value, Node::Null);
        let text = |key| scalar_text(field(&root, key), source);
        assert_eq!(text("a").as_deref(), Some("1.10"));
        assert_eq!(text("b").as_deref(), Some("yes"));
        assert_eq!(text("c").as_deref(), Some("0x1F"));
        assert_eq!(text("d").as_deref(), Some("q"));
        assert_eq!(text("e"), None);
        assert_eq!(text("f").as_deref(), Some(".NaN"));
        assert_eq!(text("g").as_deref(), Some("plain text"));
        for key in ["a", "b", "c", "d", "f", "g"] {
            let node = field(&root, key).clone();
            let taken = into_scalar_text(node.clone(), source).expect("a scalar");
            assert_eq!(Some(taken.value), text(key), "{key}");
            assert_eq!(taken.referenced, node.referenced, "{key}");
        }
        let null = field(&root, "e").clone();
        assert_eq!(into_scalar_text(null.clone(), source), Err(null));
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_caller_to_report() {
        let root = parse("a: 1\na: 2\n").expect("valid YAML");
        let Node::Map(entries) = root.value else {
            panic!("not a mapping");
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0.referenced.line(), 2);
    }

    #[test]
    fn documents_keep_their_positions_in_the_stream() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").expect("valid YAML");
        assert_eq!(docs.len(), 2, "the empty document is skipped");
        assert_eq!(docs[1].referenced.line(), 4);
        assert!(parse_documents("a: 1\n---\nb: [\n").is_err());
    }

    #[test]
    fn broken_yaml_is_still_an_error() {
        assert!(parse("a: [1, 2\n").is_err());
    }
}
